"""What every dataset reader returns: class names and two splits of (RGB PIL image, label)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


class Split:
    """One split of a dataset: ``ids`` (stable sample names), ``labels`` and a way to load an image."""

    def __init__(self, ids: list[str], labels, loader: Callable[[int], Image.Image], groups=None, fine_labels=None):
        self.ids = list(ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._loader = loader
        # Optional per-sample group ids (Waterbirds: label x background) for group metrics.
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        # Optional per-sample index into DatasetSplits.fine_classes (Waterbirds: the CUB species),
        # so per-class targets of the finer classes can be looked up per image.
        self.fine_labels = None if fine_labels is None else np.asarray(fine_labels, dtype=np.int64)
        if len(self.ids) != len(self.labels):
            raise ValueError("ids and labels differ in length")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> Image.Image:
        return self._loader(i)

    def subset(self, indices) -> "Split":
        indices = np.asarray(indices, dtype=np.int64)
        parent = self
        return Split(
            [self.ids[i] for i in indices],
            self.labels[indices],
            lambda j: parent.load(int(indices[j])),
            None if self.groups is None else self.groups[indices],
            None if self.fine_labels is None else self.fine_labels[indices],
        )


def file_loader(paths: list[Path]) -> Callable[[int], Image.Image]:
    def load(i: int) -> Image.Image:
        with Image.open(paths[i]) as im:
            return im.convert("RGB")

    return load


@dataclass
class DatasetSplits:
    name: str
    classes: list[str]
    train: Split
    test: Split
    native_size: int | None = None  # side length when every image has one size (Fashion-MNIST: 28)
    group_names: list[str] = field(default_factory=list)
    fine_classes: list[str] = field(default_factory=list)  # names of Split.fine_labels (Waterbirds: CUB species)
    reader: str = ""  # the registered reader that read it (cub, imagefolder, ...); set by load_dataset
