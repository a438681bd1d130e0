"""Checkpoints, format version 1: a plain dict that loads with ``torch.load(weights_only=True)``.

Keys: format, format_version, arch (student name), num_classes, classes, image_size, in_chans,
head ({"method", "extra_dim", "shape", "targets_kind", ...}), config (the train options), metrics,
epoch, model (state dict) and, for resuming, optimizer, scheduler and rng states. No pickled code.
"""

from __future__ import annotations

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
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = require_file(path, "checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to a user
        raise MakdError(f"{path} is not a loadable makd checkpoint ({type(exc).__name__}); give a .pt written by `makd train`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MakdError(f"{path} is not a makd checkpoint; give a .pt written by `makd train`")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise MakdError(f"{path} has checkpoint format version {ckpt.get('format_version')}; this makd reads {FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise MakdError(f"{path} lacks {', '.join(missing)}; the checkpoint is damaged")
    return ckpt
