"""Teacher backends as plug-ins: one small file per backend, each a decorated factory.

``LANGUAGE_BACKENDS`` (``--backend`` of gen-questions / extract) hold factories
``(spec, *, threads, seed, api_base, api_key_env, device, naive, **declared options) -> LanguageModel``;
``MULTIMODAL_BACKENDS`` (``extract --mllm``) hold factories ``(name, *, device, trust_remote_code, mmproj,
threads) -> MultimodalTeacher`` plus a ``claims(name)`` test; the first backend whose test accepts the
model name loads it, unless ``--backend`` names one with ``backend_flag`` (``openai``: a server, any
model name). The factories import their implementation lazily, so listing backends is cheap.
Every module of this package is imported on first use: a new backend file registers itself.
"""

from __future__ import annotations

from makd_cli.registry import Registry, option_values

LANGUAGE_BACKENDS: Registry = Registry("--backend", package="makd_cli.teachers.backends")
MULTIMODAL_BACKENDS: Registry = Registry("multimodal backend", package="makd_cli.teachers.backends")
register_language_backend = LANGUAGE_BACKENDS.register
register_multimodal_backend = MULTIMODAL_BACKENDS.register

COMMON = ("threads", "seed", "api_base", "api_key_env", "device", "naive")


def load_llm(spec: str, backend: str = "llama.cpp", **kwargs):
    """Load language model ``spec`` with ``backend``; options of other backends in ``kwargs`` are ignored."""
    entry = LANGUAGE_BACKENDS.entry(backend)
    common = {k: kwargs[k] for k in COMMON if k in kwargs}
    return entry.obj(spec, **common, **option_values(entry.options, kwargs))


def load_multimodal(name: str, backend: str | None = None, **kwargs):
    """Load multimodal teacher ``name``: with the backend that ``--backend`` names where one is chosen by
    that flag alone (``openai``), else with the first backend that claims the name (transformers last).
    ``kwargs`` holds the common settings and the options the backends declare (others' are ignored)."""
    entries = sorted(MULTIMODAL_BACKENDS.entries(), key=lambda e: getattr(e.obj, "priority", 0))
    chosen = [e for e in entries if backend is not None and getattr(e.obj, "backend_flag", None) == backend]
    for entry in chosen or [e for e in entries if e.obj.claims(name)]:
        declared = option_values(entry.options, kwargs)
        return entry.obj(name, **{k: v for k, v in kwargs.items() if k not in declared}, **declared)
    raise AssertionError("the transformers backend claims every name")  # pragma: no cover
