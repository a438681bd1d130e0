"""Seeded train / validation carving: validation comes from training data, never from test."""

from __future__ import annotations

import math

import numpy as np

from makd_cli.data.base import Split
from makd_cli.errors import MakdError


def carve_train_val(
    train: Split,
    num_classes: int,
    val_fraction: float = 0.1,
    per_class: int | None = None,
    train_fraction: float = 1.0,
    seed: int = 0,
) -> tuple[Split, Split | None]:
    """Split ``train`` per class into (train, val).

    Each class is shuffled with ``seed``; validation takes ``val_fraction`` of the images the class
    would train on (at least one), and training keeps the next ``per_class`` images (the papers'
    small-data regime) or ``train_fraction`` of the rest (makd.txt Table 5).
    """
    if not 0 <= val_fraction < 1:
        raise MakdError("--val-fraction must be in [0, 1)")
    if not 0 < train_fraction <= 1:
        raise MakdError("--train-fraction must be in (0, 1]")
    if per_class is not None and per_class < 1:
        raise MakdError("--per-class must be at least 1")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(train.labels == c))
        if len(idx) == 0:
            continue
        pool = len(idx) if per_class is None else min(len(idx), per_class)
        n_val = 0 if val_fraction == 0 or len(idx) < 2 else max(1, int(round(val_fraction * pool)))
        if per_class is None:
            n_val = min(n_val, len(idx) - 1)
        val_idx += idx[:n_val].tolist()
        rest = idx[n_val:]
        n_train = len(rest) if per_class is None else min(per_class, len(rest))
        n_train = max(1, int(math.floor(n_train * train_fraction))) if n_train else 0
        train_idx += rest[:n_train].tolist()
    if not train_idx:
        raise MakdError("no training images left after the split; lower --val-fraction or raise --per-class")
    val = train.subset(sorted(val_idx)) if val_idx else None
    return train.subset(sorted(train_idx)), val
