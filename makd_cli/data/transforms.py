"""Image transforms and the torch Dataset wrapper that yields (tensor, label, index)."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
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


def _uniform(low: float, high: float) -> float:
    # torch's RNG, not Python's: loader workers seed it from the epoch's generator, so runs and resumes repeat.
    return low + (high - low) * float(torch.rand(()))


def _affine(img, coeffs):
    return img.transform(img.size, Image.Transform.AFFINE, coeffs)


# FixMatch's RandAugment pool as MLKD's code uses it (LaViD's lavid/data/mlkd_augment.py): op, low, high.
RANDAUGMENT_OPS = (
    (lambda img, v: ImageOps.autocontrast(img), 0, 1),
    (lambda img, v: ImageEnhance.Brightness(img).enhance(v), 0.05, 0.95),
    (lambda img, v: ImageEnhance.Color(img).enhance(v), 0.05, 0.95),
    (lambda img, v: ImageEnhance.Contrast(img).enhance(v), 0.05, 0.95),
    (lambda img, v: ImageOps.equalize(img), 0, 1),
    (lambda img, v: img, 0, 1),
    (lambda img, v: ImageOps.posterize(img, max(1, int(v))), 4, 8),
    (lambda img, v: img.rotate(v), -30, 30),
    (lambda img, v: ImageEnhance.Sharpness(img).enhance(v), 0.05, 0.95),
    (lambda img, v: _affine(img, (1, v, 0, 0, 1, 0)), -0.3, 0.3),  # shear x
    (lambda img, v: _affine(img, (1, 0, 0, v, 1, 0)), -0.3, 0.3),  # shear y
    (lambda img, v: ImageOps.solarize(img, v), 0, 256),
    (lambda img, v: _affine(img, (1, 0, v * img.size[0], 0, 1, 0)), -0.3, 0.3),  # translate x
    (lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1])), -0.3, 0.3),  # translate y
)
CUTOUT_FILL = (125, 123, 114)


class RandAugment:
    """MLKD's strong augmentation, ``RandAugment(2, 10)`` of its code: ``n`` ops drawn with replacement
    from ``RANDAUGMENT_OPS``, each at a uniform random magnitude in its range (the code ignores ``m``),
    then a Cutout square of side up to half the image width filled with grey (125, 123, 114)."""

    def __init__(self, n: int = 2, m: int = 10):
        self.n, self.m = n, m

    def __call__(self, img):
        for k in torch.randint(len(RANDAUGMENT_OPS), (self.n,)).tolist():
            op, low, high = RANDAUGMENT_OPS[k]
            img = op(img, _uniform(low, high))
        side = _uniform(0, 0.5) * img.size[0]
        if side <= 0:
            return img
        w, h = img.size
        # The code's centre is np.random.uniform(w), i.e. uniform(low=w, high=1): between 1 and w.
        x0, y0 = int(max(0, _uniform(1, w) - side / 2)), int(max(0, _uniform(1, h) - side / 2))
        img = img.copy()
        ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), CUTOUT_FILL)
        return img

    def __repr__(self) -> str:
        return f"RandAugment(n={self.n}, m={self.m})"


def strong_train_transform(size: int, native_size: int | None = None) -> T.Compose:
    """MLKD's strong view: the training transform's crop and flip, then :class:`RandAugment` (2, 10)."""
    weak = train_transform(size, native_size).transforms
    return T.Compose(weak[:-2] + [RandAugment(2, 10)] + weak[-2:])


class WeakStrong:
    """Both views of one image stacked (2 x C x H x W): batches collate to B x 2 x C x H x W, which the
    loop splits (a class, not a lambda: loader workers pickle it)."""

    def __init__(self, weak, strong):
        self.weak, self.strong = weak, strong

    def __call__(self, img):
        return torch.stack([self.weak(img), self.strong(img)])


def eval_transform(size: int, native_size: int | None = None, resize: int | None = None) -> T.Compose:
    """Test images: small ones squashed to ``size``; others' shorter side resized to ``resize`` (default
    size x 256/224: LaViD's Resize(256) + CenterCrop(224); MaKD's code uses Resize(224), ``--test-resize 224``),
    then centre-cropped to ``size``."""
    if size <= SMALL:
        ops = [] if native_size == size else [T.Resize((size, size))]
    else:
        ops = [T.Resize(int(resize) if resize else int(round(size * 256 / 224))), T.CenterCrop(size)]
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
