"""``--backend hf`` (transformers causal LM) and the transformers multimodal teachers (``--mllm``)."""

from __future__ import annotations

from makd_cli.errors import MakdError
from makd_cli.registry import Option
from makd_cli.teachers.backends import register_language_backend, register_multimodal_backend


@register_language_backend("hf", help="a transformers causal LM (hub id or local folder)", options=[
    Option("batch-size", int, 0, "--backend hf: prompts per forward pass (0 = automatic).", min=0),
])
def hf(spec, *, device="auto", seed=0, batch_size=0, **_):
    try:
        from makd_cli.teachers.hf_causal import HFCausalLM
    except ImportError:
        raise MakdError("--backend hf is not available in this build of makd") from None
    return HFCausalLM(spec, device=device, seed=seed, batch_size=batch_size)


@register_multimodal_backend("transformers", help="an image-text-to-text model of transformers (hub id, alias or folder)")
def transformers_mllm(name, *, device=None, trust_remote_code=False, mmproj=None, threads=None, **_):
    from makd_cli.teachers.hf_mllm import load_mllm

    return load_mllm(name, device=device, trust_remote_code=trust_remote_code, mmproj=mmproj, threads=threads)


transformers_mllm.claims = lambda name: True  # the fallback: any other name is a transformers model
transformers_mllm.priority = 100
