"""Detection batches: (positions, images, targets) with a random horizontal flip for training.

The loader's first item is the tensor of positions in the training set (what the engine counts a
batch by and what per-image aspect targets are looked up with); images and targets stay lists, since
their sizes differ (torchvision's detector resizes and pads them itself).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from makd_cli.data.coco import CocoSplit
from makd_cli.errors import MakdError


def read_image(path) -> torch.Tensor:
    """An RGB image as a float tensor in [0, 1] (C, H, W); an unreadable file is one line."""
    try:
        with Image.open(path) as im:
            return pil_to_tensor(im.convert("RGB")).float().div_(255)
    except (OSError, ValueError) as exc:
        raise MakdError(f"cannot read image {path} ({type(exc).__name__}); replace or remove it from the annotation file") from None


class DetectionData(torch.utils.data.Dataset):
    """Images ``positions`` of ``split``; item i: (i, image, {"boxes": (n, 4) xyxy, "labels": (n,)})."""

    def __init__(self, split: CocoSplit, positions: list[int], flip: bool = True):
        self.split, self.positions, self.flip = split, list(positions), flip

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        k = self.positions[i]
        try:
            image = read_image(self.split.paths[k])
        except MakdError as exc:  # raised by the training step (check_readable): a DataLoader worker's error carries its traceback
            return i, None, {"unreadable": str(exc)}
        boxes = torch.from_numpy(np.array(self.split.boxes[k], dtype=np.float32)).reshape(-1, 4)
        if self.flip and torch.rand(()) < 0.5:  # Detectron2's RandomFlip; torch's RNG, reseeded every epoch
            image = image.flip(-1)
            width = image.shape[-1]
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return i, image, {"boxes": boxes, "labels": torch.from_numpy(np.array(self.split.labels[k], dtype=np.int64))}


def check_readable(images: list, targets: list[dict]) -> None:
    """The one-line error of the first image of a batch that could not be read (``None`` in ``images``)."""
    for image, target in zip(images, targets):
        if image is None:
            raise MakdError(target["unreadable"])


def collate(items) -> tuple:
    positions, images, targets = zip(*items)
    return torch.tensor(positions, dtype=torch.long), list(images), list(targets)
