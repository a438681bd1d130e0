"""Caltech-101 (101 object classes) read with torchvision's ``Caltech101`` (no download).

Layout (the unpacked caltech-101.zip and its 101_ObjectCategories.tar.gz; PATH may be the folder
holding 101_ObjectCategories/, that folder itself, or torchvision's root holding caltech101/)::

    caltech101/101_ObjectCategories/<class>/image_0001.jpg ...

BACKGROUND_Google is not a class and is left out (as torchvision does). Caltech-101 has no
official split; this reader uses the common protocol: per class, a seeded random 30 images train
and all the rest test (3,030 train / 5,647 test). A class of 30 or fewer images keeps one test image.
Class names turn underscores into spaces ("Faces_easy" -> "Faces easy").

``caltech101-lavid`` is LaViD's split instead (its reference code, ``utils._build_splits``): all
8,677 images in one pool, ``torch.utils.data.random_split(pool, [4310, 0, 4367])`` with a generator
seeded 27, whatever the training seed, so 4,310 train / 4,367 test. The pool is ordered by class,
then by file number; the reference orders files as ``os.listdir`` returns them, which is the
filesystem's order, so the draw is the same but the images it lands on may differ on another machine
(docs/reproducing.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from makd_cli.data.base import DatasetSplits, Split, file_loader
from makd_cli.data.native import find_native_folder
from makd_cli.data.layout import Layout
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

CATEGORIES = "101_ObjectCategories"
BACKGROUND = "BACKGROUND_Google"
TRAIN_PER_CLASS = 30
LAVID_SEED = 27  # the reference's generator seed, fixed across its runs
LAVID_TRAIN, LAVID_TEST = 4310, 4367  # of the 8,677 images
LAYOUT = f"a folder holding {CATEGORIES}/<class>/image_0001.jpg, ... (the unpacked caltech-101 archives)"


def find_folder(root: Path | None) -> Path:
    # PATH may also be 101_ObjectCategories/ itself: then the folder is its parent.
    up = ("..",) if root is not None and root.name == CATEGORIES else ()
    return find_native_folder(
        root, name="caltech101", display="Caltech-101", layout=LAYOUT, marker=f"{CATEGORIES}/", example="caltech-101",
        under=("caltech101", "caltech-101", *up), not_found=f"has no {CATEGORIES}/ folder",
    )


def _read_pool(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    """torchvision's class list and file numbering, on a linked copy of the category folders."""
    from torchvision.datasets import Caltech101

    with tempfile.TemporaryDirectory(prefix="makd-caltech101-") as tmp:
        # Link only the class folders (stray files such as .DS_Store would become classes) and
        # add an empty background folder if the copy lacks one (torchvision expects to drop it).
        linked = Path(tmp, "caltech101", CATEGORIES)
        linked.mkdir(parents=True)
        for d in (folder / CATEGORIES).iterdir():
            if d.is_dir() and not d.name.startswith("."):
                (linked / d.name).symlink_to(d.resolve(), target_is_directory=True)
        (linked / BACKGROUND).mkdir(exist_ok=True)
        ds = Caltech101(tmp, target_type="category", download=False)
        categories, numbers, labels = list(ds.categories), list(ds.index), [int(y) for y in ds.y]
    if not categories:
        raise MakdError(f"Caltech-101: {folder / CATEGORIES} has no class folders (expected {LAYOUT})")
    paths = [folder / CATEGORIES / categories[y] / f"image_{n:04d}.jpg" for n, y in zip(numbers, labels)]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise MakdError(
            f"Caltech-101: {missing} is missing; each class folder must hold only image_0001.jpg, "
            "image_0002.jpg, ... numbered without gaps (the native layout)"
        )
    return categories, paths, labels


@register_dataset("caltech101", help="Caltech-101, seeded 30 train per class, rest test (NAME:PATH)",
                  layout=Layout(markers=(f"{CATEGORIES}/",), under=("caltech101", "caltech-101"), lookalikes=(CATEGORIES, "Annotations")))
def load_caltech101(root: Path | None, seed: int = 0, train_per_class: int = TRAIN_PER_CLASS) -> DatasetSplits:
    folder = find_folder(root)
    categories, paths, labels = _read_pool(folder)
    ids = [p.relative_to(folder / CATEGORIES).as_posix() for p in paths]
    pool = Split(ids, labels, file_loader(paths))
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(len(categories)):
        idx = rng.permutation(np.flatnonzero(pool.labels == c))
        k = min(train_per_class, len(idx) - 1) if len(idx) > 1 else len(idx)
        train_idx += idx[:k].tolist()
        test_idx += idx[k:].tolist()
    classes = [c.replace("_", " ") for c in categories]
    return DatasetSplits("caltech101", classes, pool.subset(sorted(train_idx)), pool.subset(sorted(test_idx)))


def lavid_partition(n: int, seed: int = LAVID_SEED) -> tuple[list[int], list[int]]:
    """(train, test) positions of ``n`` pooled images as LaViD's reference splits them: one
    ``random_split`` of 0..n-1 into [train, 0, test] lengths with ``torch.Generator().manual_seed(seed)``
    (its randperm: the first ``train`` entries train, the rest test, in drawn order). For the full
    8,677 images the lengths are the reference's 4,310 / 4,367; another ``n`` (a partial copy, a
    test layout) keeps the proportion, at least one image each side."""
    import torch
    from torch.utils.data import random_split

    if n < 2:
        raise MakdError(f"Caltech-101: {n} image(s) cannot be split into train and test")
    if n == LAVID_TRAIN + LAVID_TEST:
        n_train = LAVID_TRAIN
    else:
        n_train = min(n - 1, max(1, round(n * LAVID_TRAIN / (LAVID_TRAIN + LAVID_TEST))))
    train, _, test = random_split(range(n), [n_train, 0, n - n_train], generator=torch.Generator().manual_seed(seed))
    return list(train.indices), list(test.indices)


@register_dataset("caltech101-lavid", help="Caltech-101 as LaViD splits it: all images, seeded (27) 4,310 train / 4,367 test (NAME:PATH)")
def load_caltech101_lavid(root: Path | None, seed: int = 0) -> DatasetSplits:
    # ``seed`` (the training seed) is not used: the reference draws one partition for every run.
    folder = find_folder(root)
    categories, paths, labels = _read_pool(folder)
    ids = [p.relative_to(folder / CATEGORIES).as_posix() for p in paths]
    pool = Split(ids, labels, file_loader(paths))
    train_idx, test_idx = lavid_partition(len(pool))
    classes = [c.replace("_", " ") for c in categories]
    return DatasetSplits("caltech101-lavid", classes, pool.subset(sorted(train_idx)), pool.subset(sorted(test_idx)))
