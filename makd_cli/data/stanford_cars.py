"""Stanford Cars (196 car models) read with torchvision's ``StanfordCars`` (no download).

Layout (torchvision's; the folder may have any name, PATH may be it or the folder holding it)::

    stanford_cars/
        devkit/cars_meta.mat             class_names
        devkit/cars_train_annos.mat      annotations: fname, class (1-based), bbox
        cars_test_annos_withlabels.mat   the same for the test images
        cars_train/*.jpg  cars_test/*.jpg

The official split is used (8,144 train / 8,041 test); class names are the devkit's
("AM General Hummer SUV 2000"), with underscores turned into spaces if any.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from makd_cli.data.base import DatasetSplits, Split, file_loader
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

BASE = "stanford_cars"  # the folder name torchvision looks for under its root
FILES = (
    "devkit/cars_meta.mat",
    "devkit/cars_train_annos.mat",
    "cars_test_annos_withlabels.mat",
    "cars_train",
    "cars_test",
)
LAYOUT = (
    "stanford_cars/ holding devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
    "cars_test_annos_withlabels.mat, cars_train/ and cars_test/ (torchvision's StanfordCars layout)"
)


def find_folder(root: Path | None) -> Path:
    if root is None:
        raise MakdError(f"cars needs a path: --data cars:/path/to/stanford_cars (expected {LAYOUT})")
    if not root.is_dir():
        raise MakdError(f"Stanford Cars folder {root} does not exist (expected {LAYOUT})")
    folder = next((c for c in (root, root / BASE) if (c / "devkit").is_dir()), root)
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise MakdError(f"Stanford Cars: {folder} lacks {', '.join(missing)} (expected {LAYOUT})")
    return folder


@contextmanager
def torchvision_root(folder: Path):
    """A temporary root in which ``BASE`` links to ``folder``, so the folder may have any name."""
    with tempfile.TemporaryDirectory(prefix="makd-cars-") as tmp:
        link = Path(tmp, BASE)
        link.symlink_to(folder.resolve(), target_is_directory=True)
        yield Path(tmp), link


@register_dataset("cars", help="Stanford Cars, official split (NAME:PATH to torchvision's stanford_cars/)")
def load_cars(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import StanfordCars

    folder = find_folder(root)
    splits, classes = {}, None
    with torchvision_root(folder) as (tv_root, link):
        for split in ("train", "test"):
            try:
                ds = StanfordCars(tv_root, split=split, download=False)
            except Exception as e:  # unreadable .mat files: say so in one line
                raise MakdError(f"Stanford Cars: cannot read {folder} ({type(e).__name__}: {e}); expected {LAYOUT}")
            rel = [Path(p).relative_to(link) for p, _ in ds._samples]
            labels = [int(t) for _, t in ds._samples]
            classes = classes or [str(c).replace("_", " ").strip() for c in ds.classes]
            if labels and not (0 <= min(labels) and max(labels) < len(classes)):
                raise MakdError(f"Stanford Cars: {split} annotations name classes outside devkit/cars_meta.mat")
            if rel and not (folder / rel[0]).is_file():
                raise MakdError(f"Stanford Cars: {folder / rel[0]} is missing; expected {LAYOUT}")
            splits[split] = Split([r.as_posix() for r in rel], labels, file_loader([folder / r for r in rel]))
    return DatasetSplits("cars", classes, splits["train"], splits["test"])
