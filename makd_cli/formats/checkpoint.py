"""Checkpoints, format version 1: a plain dict that loads with ``torch.load(weights_only=True)``.

Keys: format, format_version, arch (student name), num_classes, classes, image_size, in_chans,
head ({"method", "extra_dim", "shape", "targets_kind", ...}), config (the train options), metrics,
epoch, selection (which epoch best.pt holds and by which --select-by protocol; optional, absent in
runs from before it: "val"), model (state dict) and, for resuming, optimizer, scheduler and rng
states. No pickled code.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from makd_cli.errors import MakdError
from makd_cli.fileio import atomic_path, require_file

FORMAT = "makd-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("arch", "num_classes", "classes", "head", "config", "model")


def save_checkpoint(path: str | Path, ckpt: dict) -> None:
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, **ckpt}
    with atomic_path(path, suffix=".pt") as tmp:
        with open(tmp, "wb") as fh:  # a file object: a full disk raises OSError(ENOSPC), not a RuntimeError
            torch.save(ckpt, fh)


def load_checkpoint(path: str | Path) -> dict:
    path = require_file(path, "checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles on stderr: the one line below says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except BaseException as exc:  # torch raises many types for a bad file (EOFError for an empty one)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise MakdError(f"{path} is not a loadable makd checkpoint ({type(exc).__name__}); give a .pt written by `makd train`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MakdError(f"{path} is not a makd checkpoint; give a .pt written by `makd train`")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise MakdError(f"{path} has checkpoint format version {ckpt.get('format_version')}; this makd reads {FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise MakdError(f"{path} lacks {', '.join(missing)}; the checkpoint is damaged")
    problem = _damage(ckpt)
    if problem:
        raise MakdError(f"{path} is damaged: {problem}; retrain it with `makd train`")
    return ckpt


def _damage(ckpt: dict) -> str | None:
    """What is wrong with a checkpoint's fields, or None; keeps every later reader free of type checks."""
    if not isinstance(ckpt["arch"], str) or not ckpt["arch"]:
        return f"arch is {ckpt['arch']!r}, not a student name"
    classes, n = ckpt["classes"], ckpt["num_classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return "classes is not a list of names"
    if not isinstance(n, int) or isinstance(n, bool) or n != len(classes) or n < 1:
        return f"num_classes {n!r} does not match its {len(classes)} classes"
    head = ckpt["head"]
    if not isinstance(head, dict):
        return "head is not a dict"
    extra = head.get("extra_dim", 0)
    if not isinstance(extra, int) or isinstance(extra, bool) or extra < 0:
        return f"head.extra_dim {extra!r} is not a count"
    slices = head.get("slices") or {}
    if not isinstance(slices, dict) or not all(
        isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v) and 0 <= v[0] <= v[1] <= extra
        for v in slices.values()
    ):
        return "head.slices do not fit its extra outputs"
    if not isinstance(head.get("question_ids", []), list):
        return "head.question_ids is not a list"
    size = ckpt.get("image_size", 224)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f"image_size {size!r} is not a positive number"
    if not isinstance(ckpt["config"], dict):
        return "config is not a dict"
    model = ckpt["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        return "model is not a state dict of tensors"
    bad = next((k for k, v in model.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        return f"its weight {bad} holds NaN or infinite values"
    return None
