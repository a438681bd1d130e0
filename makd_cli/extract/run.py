"""The ``makd extract`` job: pick the teacher kind from the config (``extract/kinds.py``) and run its driver."""

from __future__ import annotations

import os

from makd_cli.errors import MakdError
from makd_cli.extract.config import ExtractConfig
from makd_cli.extract.kinds import TEACHER_KINDS, TeacherKind
from makd_cli.fileio import check_outputs_distinct, output_lock
from makd_cli.job_paths import extract_inputs


def run_extract(cfg: ExtractConfig | None = None, **fields_) -> dict:
    """Run the extraction (an ``ExtractConfig``, or its fields as keywords) while holding the output's lock:
    a second job on the same -o stops at once (naming the holder) instead of repeating all the work.
    Under torchrun only rank 0 takes it."""
    cfg = cfg if cfg is not None else ExtractConfig(**fields_)
    kind = _teacher_kind(cfg)
    _check(cfg, kind)
    check_outputs_distinct(extract_inputs(cfg), {"-o": cfg.output})  # before any work: an input is never written over
    if os.environ.get("RANK", "0") != "0":
        return kind.run(cfg)
    with output_lock(cfg.output, "targets file"):
        return kind.run(cfg)


def _teacher_kind(cfg: ExtractConfig) -> TeacherKind:
    kinds = TEACHER_KINDS.entries()
    chosen = [e.obj for e in kinds if getattr(cfg, e.obj.field, None)]
    if len(chosen) != 1:
        flags = " MODEL, ".join(e.obj.flag for e in kinds if e.obj.field != "teacher")
        raise MakdError(f"choose exactly one teacher: {flags} MODEL or --teacher random|word-embedding"
                        + (f" (got {', '.join(k.flag for k in chosen)})" if chosen else ""))
    return chosen[0]


def _check(cfg: ExtractConfig, kind: TeacherKind) -> None:
    if cfg.labels not in ("digits", "letters"):
        raise MakdError("--labels must be digits or letters")
    _check_layout(cfg, kind)
    if cfg.classes is not None and cfg.data is not None:
        raise MakdError("give the classes one way: --classes FILE or --data DATASET (its classes), not both")
    if cfg.mmproj is not None and cfg.mllm is None:
        raise MakdError("--mmproj goes with --mllm MODEL.gguf (the vision projector of a llama.cpp language model)")


def _check_layout(cfg: ExtractConfig, kind: TeacherKind) -> None:
    """--prompt-layout must be one the chosen teacher asks with: --llm the per-class layouts, --mllm
    --kind yesno the per-image yes/no ones; the other teachers have one prompt ("paper")."""
    fits = kind.layouts(cfg)
    if cfg.prompt_layout in fits:
        return
    known = []
    for e in TEACHER_KINDS.entries():
        for kind_of in ("yesno", "zero_shot"):
            known += [x for x in e.obj.layouts(_with_kind(cfg, kind_of)) if x not in known]
    if cfg.prompt_layout not in known:
        raise MakdError(f"--prompt-layout {cfg.prompt_layout!r} is unknown; choose {' or '.join(known)}")
    mode = kind.flag + (f" --kind {cfg.kind}" if kind.field == "mllm" else "")
    raise MakdError(f"--prompt-layout {cfg.prompt_layout} does not fit {mode}; it takes {' or '.join(fits)}")


def _with_kind(cfg: ExtractConfig, kind: str) -> ExtractConfig:
    from dataclasses import replace

    return replace(cfg, kind=kind)


__all__ = ["ExtractConfig", "run_extract"]
