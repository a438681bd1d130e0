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

LANGUAGE_BACKENDS: Registry = Registry("--backend", package="makd_cli.teachers.backends", kind="backend")
MULTIMODAL_BACKENDS: Registry = Registry("multimodal backend", package="makd_cli.teachers.backends", kind="multimodal-backend")
register_language_backend = LANGUAGE_BACKENDS.register
register_multimodal_backend = MULTIMODAL_BACKENDS.register

COMMON = ("threads", "seed", "api_base", "api_key_env", "device", "naive")


def load_llm(spec: str, backend: str = "llama.cpp", **kwargs):
    """Load language model ``spec`` with ``backend``; options of other backends in ``kwargs`` are ignored."""
    entry = LANGUAGE_BACKENDS.entry(backend)
    common = {k: kwargs[k] for k in COMMON if k in kwargs}
    return entry.obj(spec, **common, **option_values(entry.options, kwargs))


def claiming_backend(name: str, backend: str | None = None) -> str:
    """The multimodal backend that loads ``--mllm name``: the one ``--backend`` names where a backend is
    chosen by that flag alone (``openai``: a server), else the first whose ``claims`` accepts the name
    (transformers last)."""
    entries = sorted(MULTIMODAL_BACKENDS.entries(), key=lambda e: getattr(e.obj, "priority", 0))
    for entry in entries:
        if backend is not None and getattr(entry.obj, "backend_flag", None) == backend:
            return entry.name
    for entry in entries:
        if entry.obj.claims(name):
            return entry.name
    raise AssertionError("the transformers backend claims every name")  # pragma: no cover


def load_multimodal(name: str, backend: str | None = None, options: dict | None = None, **kwargs):
    """Load multimodal teacher ``name`` with its backend (``claiming_backend``); ``options``: the plug-in
    options given (the backend's declared ones reach it, with their defaults); ``kwargs``: the common
    settings (device, threads, api_base, ...)."""
    entry = MULTIMODAL_BACKENDS.entry(claiming_backend(name, backend))
    keys = {o.key for o in entry.options}  # its declared options may come in kwargs too (the Python API)
    given = {**{k: v for k, v in kwargs.items() if k in keys}, **(options or {})}
    common = {k: v for k, v in kwargs.items() if k not in keys}
    return entry.obj(name, **common, **option_values(entry.options, given))
