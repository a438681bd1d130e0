"""``--backend llama.cpp`` (default) and ``--mllm MODEL.gguf --mmproj``: GGUF models through llama-cpp-python."""

from __future__ import annotations

from makd_cli.teachers.backends import register_language_backend, register_multimodal_backend


@register_language_backend("llama.cpp", help="GGUF models on the CPU via llama-cpp-python (default)")
def llamacpp(spec, *, threads=None, seed=0, naive=False, **_):
    from makd_cli.teachers.llamacpp import LlamaCppLM

    return LlamaCppLM(spec, threads=threads, seed=seed, logits_all=naive)


@register_multimodal_backend("llama.cpp", help="a GGUF language model with its --mmproj vision projector (CPU)")
def llamacpp_mllm(name, *, mmproj=None, threads=None, device=None, **_):
    from makd_cli.teachers.llamacpp_mllm import load_llamacpp_mllm

    return load_llamacpp_mllm(name, mmproj, threads=threads, device=device)


def _claims(name: str) -> bool:
    from makd_cli.teachers.llamacpp_mllm import is_gguf_spec

    return is_gguf_spec(name)


llamacpp_mllm.claims = _claims
llamacpp_mllm.priority = 0
