"""``--backend openai``: any OpenAI-compatible chat endpoint (``--api-base``, key from $OPENAI_API_KEY),
for a language teacher (``--llm``) and for a multimodal one (``--mllm MODEL --backend openai``)."""

from __future__ import annotations

from makd_cli.errors import MakdError
from makd_cli.registry import Option
from makd_cli.teachers.backends import register_language_backend, register_multimodal_backend

CONCURRENCY = Option("concurrency", int, 16, "--backend openai: requests in flight at once.", min=1)
# The multimodal teacher's own settings (declared on the multimodal backend: extract offers them with --mllm).
IMAGE_MAX_SIDE = Option("image-max-side", int, 0, "--mllm with --backend openai: downsize images whose longer side "
                        "exceeds this many pixels before sending (0: send every image as it is, losslessly).", min=0)
SCORE_ENDPOINT = Option("score-endpoint", str, "auto", "--mllm with --backend openai: use the server's /v1/score "
                        "(SGLang) when it answers and sees the image (auto), or always chat completions (off).",
                        choices=("auto", "off"))


@register_language_backend("openai", help="an OpenAI-compatible chat API (--api-base)", options=[CONCURRENCY])
def openai(spec, *, api_base=None, api_key_env="OPENAI_API_KEY", concurrency=16, **_):
    try:
        from makd_cli.teachers.openai_http import OpenAIChatLM
    except ImportError:
        raise MakdError("--backend openai is not available in this build of makd") from None
    return OpenAIChatLM(spec, api_base=api_base, api_key_env=api_key_env, concurrency=concurrency)


@register_multimodal_backend("openai", help="an image-text model behind an OpenAI-compatible server (--backend openai --api-base)",
                             options=[CONCURRENCY, IMAGE_MAX_SIDE, SCORE_ENDPOINT])
def openai_mllm(name, *, api_base=None, api_key_env="OPENAI_API_KEY", concurrency=16, image_max_side=0,
                score_endpoint="auto", mmproj=None, **_):
    from makd_cli.teachers.openai_mllm import OpenAIMultimodalTeacher

    if mmproj is not None:
        raise MakdError("--mmproj is for --mllm MODEL.gguf in this process; with --backend openai the server holds the projector")
    return OpenAIMultimodalTeacher(name, api_base=api_base, api_key_env=api_key_env, concurrency=concurrency,
                                   image_max_side=image_max_side, score_endpoint=score_endpoint)


openai_mllm.claims = lambda name: False  # never picked by the model's name: only by --backend openai
openai_mllm.backend_flag = "openai"
