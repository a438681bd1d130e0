"""Language-model backends by name: ``--backend llama.cpp`` (default), ``hf``, ``openai``.

The backends are plug-ins in ``teachers/backends/`` (one file each); this module keeps the old import path.
"""

from __future__ import annotations

from makd_cli.teachers.backends import LANGUAGE_BACKENDS, load_llm, load_multimodal

__all__ = ["LANGUAGE_BACKENDS", "load_llm", "load_multimodal"]
