"""Image transforms and the torch Dataset wrapper that yields (tensor, label, index)."""

from __future__ import annotations

import torch
from torchvision import transforms as T

from makd_cli.data.base import Split

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SMALL = 64


def default_image_size(native_size: int | None) -> int:
    """Small native images train at their own size (CIFAR-style); everything else at 224 px."""
    return native_size if native_size and native_size <= SMALL else 224


def train_transform(size: int, native_size: int | None = None) -> T.Compose:
    if size <= SMALL:
        ops = [] if native_size == size else [T.Resize((size, size))]
        ops += [T.RandomCrop(size, padding=max(1, size // 8)), T.RandomHorizontalFlip()]
    else:
        ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(MEAN, STD)])


def eval_transform(size: int, native_size: int | None = None) -> T.Compose:
    if size <= SMALL:
        ops = [] if native_size == size else [T.Resize((size, size))]
    else:
        ops = [T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(MEAN, STD)])


class TorchSplit(torch.utils.data.Dataset):
    def __init__(self, split: Split, transform):
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.transform(self.split.load(i)), int(self.split.labels[i]), i
