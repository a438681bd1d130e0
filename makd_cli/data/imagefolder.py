"""Any directory with one folder per class; ``train/`` and ``test/`` (or ``val/``) subfolders if split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from makd_cli.data.base import DatasetSplits, Split, file_loader
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def scan_class_folders(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[Path], list[int]]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = [d.name for d in dirs]
    if not classes:
        raise MakdError(f"{root} has no class folders; an ImageFolder dataset needs one folder of images per class")
    # A class folder of the test split that training lacks would be silently dropped from the test.
    extra = [d.name for d in dirs if d.name not in classes]
    if extra:
        raise MakdError(f"{root} has class folder(s) {', '.join(map(repr, extra[:3]))} that the training split lacks; "
                        "every test class needs training images")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise MakdError(f"{root} lacks the class folder {name!r} that the training split has")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise MakdError(f"class folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            "add images or remove the folder")
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise MakdError(f"{root} has class folders but no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return classes, paths, labels


def folder_split(root: Path, classes: list[str] | None = None) -> tuple[list[str], Split]:
    classes, paths, labels = scan_class_folders(root, classes)
    ids = [p.relative_to(root).as_posix() for p in paths]
    return classes, Split(ids, labels, file_loader(paths))


@register_dataset("imagefolder", help="a folder of class folders, or train/ and test/ (or val/) folders of them")
def load_imagefolder(root: Path | None, seed: int = 0, test_fraction: float = 0.2) -> DatasetSplits:
    if root is None:
        raise MakdError("imagefolder needs a path: --data imagefolder:/path/to/images or just --data /path/to/images")
    if not root.is_dir():
        raise MakdError(f"dataset folder {root} does not exist")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes, train = folder_split(root / "train")
        _, test = folder_split(test_dir, classes)
        train.ids = ["train/" + i for i in train.ids]
        test.ids = [f"{test_dir.name}/" + i for i in test.ids]
        return DatasetSplits(root.name, classes, train, test)
    # One pool of class folders: hold out a seeded, stratified test split so test never trains.
    classes, pool = folder_split(root)
    rng = np.random.default_rng(seed)
    test_idx, train_idx = [], []
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(pool.labels == c))
        k = max(1, int(round(test_fraction * len(idx)))) if len(idx) > 1 else 0
        test_idx += idx[:k].tolist()
        train_idx += idx[k:].tolist()
    return DatasetSplits(root.name, classes, pool.subset(sorted(train_idx)), pool.subset(sorted(test_idx)))
