"""Image transforms and the torch Dataset wrapper that yields (tensor, label, index)."""

from __future__ import annotations

import torch
from torchvision import transforms as T

from makd_cli.data.base import Split
from makd_cli.errors import MakdError

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


MAX_UNREADABLE_FRACTION = 0.01  # more unreadable images than this (and more than one) stop the job


class UnreadableImages:
    """Which images of a split could not be decoded (corrupt, empty, not an image, a decompression
    bomb). The flags live in shared memory so DataLoader workers' findings reach the main process."""

    def __init__(self, split: Split, what: str):
        self.split, self.what = split, what
        self.flags = torch.zeros(len(split), dtype=torch.bool).share_memory_()

    def count(self) -> int:
        return int(self.flags.sum())

    def first(self) -> str | None:
        hits = torch.nonzero(self.flags)
        return self.split.ids[int(hits[0])] if len(hits) else None

    def check(self) -> None:
        """Stop with one line once more than ``MAX_UNREADABLE_FRACTION`` (and more than one) are bad."""
        n = self.count()
        if n > max(1, int(MAX_UNREADABLE_FRACTION * len(self.split))):
            raise MakdError(f"{n} of {len(self.split)} images of the {self.what} split cannot be read (first: {self.first()}); "
                            f"more than {MAX_UNREADABLE_FRACTION:.0%} are unreadable: fix or remove them")

    def report(self) -> dict | None:
        n = self.count()
        return {"count": n, "first": self.first(), "split": self.what} if n else None


def unreadable_note(report: dict | None) -> str | None:
    """The one line that reports skipped images ("skipped 3 unreadable images: first train/x.jpg")."""
    if not report:
        return None
    return f"skipped {report['count']} unreadable image{'s' if report['count'] != 1 else ''} of the {report['split']} split: first {report['first']}"


class TorchSplit(torch.utils.data.Dataset):
    """A split as a torch Dataset yielding (tensor, label, index).

    An image that cannot be decoded is flagged in ``unreadable`` and then, with ``skip_unreadable``,
    yields None (``collate_readable`` drops it: evaluation counts only readable images); otherwise
    the next readable image stands in, so training batches keep their size and the bad file is never
    trained on."""

    def __init__(self, split: Split, transform, what: str = "train", skip_unreadable: bool = False):
        self.split = split
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.unreadable = UnreadableImages(split, what)

    def __len__(self) -> int:
        return len(self.split)

    def _load(self, i: int):
        try:
            return self.split.load(i)
        except MakdError:
            raise
        except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            self.unreadable.flags[i] = True
            return None

    def __getitem__(self, i: int):
        image = self._load(i)
        if image is None and self.skip_unreadable:
            return None
        j = i
        while image is None:
            j = (j + 1) % len(self.split)
            if j == i:
                raise MakdError(f"no image of the {self.unreadable.what} split can be read (first: {self.split.ids[i]})")
            image = None if self.unreadable.flags[j] else self._load(j)
        return self.transform(image), int(self.split.labels[j]), j


def collate_readable(batch):
    """The default collation without the None items of unreadable images (None if none are left)."""
    kept = [b for b in batch if b is not None]
    return torch.utils.data.default_collate(kept) if kept else None
