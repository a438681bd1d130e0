"""``--backend openai``: any OpenAI-compatible chat endpoint (``--api-base``, key from $OPENAI_API_KEY)."""

from __future__ import annotations

from makd_cli.errors import MakdError
from makd_cli.registry import Option
from makd_cli.teachers.backends import register_language_backend


@register_language_backend("openai", help="an OpenAI-compatible chat API (--api-base)", options=[
    Option("concurrency", int, 16, "--backend openai: requests in flight at once.", min=1),
])
def openai(spec, *, api_base=None, api_key_env="OPENAI_API_KEY", concurrency=16, **_):
    try:
        from makd_cli.teachers.openai_http import OpenAIChatLM
    except ImportError:
        raise MakdError("--backend openai is not available in this build of makd") from None
    return OpenAIChatLM(spec, api_base=api_base, api_key_env=api_key_env, concurrency=concurrency)
