"""Language-model backends by name: ``--backend llama.cpp`` (default), ``hf``, ``openai``."""

from __future__ import annotations

from makd_cli.errors import MakdError

BACKENDS = ("llama.cpp", "hf", "openai")


def load_llm(spec: str, backend: str = "llama.cpp", *, threads: int | None = None, seed: int = 0, api_base: str | None = None,
             api_key_env: str = "OPENAI_API_KEY", device: str = "auto", naive: bool = False):
    if backend == "llama.cpp":
        from makd_cli.teachers.llamacpp import LlamaCppLM

        return LlamaCppLM(spec, threads=threads, seed=seed, logits_all=naive)
    if backend == "hf":
        try:
            from makd_cli.teachers.hf_causal import HFCausalLM
        except ImportError:
            raise MakdError("--backend hf is not available in this build of makd") from None
        return HFCausalLM(spec, device=device, seed=seed)
    if backend == "openai":
        try:
            from makd_cli.teachers.openai_http import OpenAIChatLM
        except ImportError:
            raise MakdError("--backend openai is not available in this build of makd") from None
        return OpenAIChatLM(spec, api_base=api_base, api_key_env=api_key_env)
    raise MakdError(f"--backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
