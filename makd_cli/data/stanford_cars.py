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

from pathlib import Path

from makd_cli.data.base import DatasetSplits
from makd_cli.data.native import (
    find_native_folder,
    native_split,
    open_torchvision,
    relative_ids,
    torchvision_root,
)
from makd_cli.data.layout import Layout
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


@register_dataset("cars", help="Stanford Cars, official split (NAME:PATH to torchvision's stanford_cars/)",
                  layout=Layout(markers=("devkit/cars_meta.mat",), under=(BASE,), lookalikes=("devkit", "cars_train", "cars_test")))
def load_cars(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import StanfordCars

    folder = find_native_folder(
        root, name="cars", display="Stanford Cars", layout=LAYOUT, marker="devkit/", files=FILES, base=BASE
    )
    splits, classes = {}, None
    with torchvision_root(folder, BASE, "cars") as (tv_root, link):
        for split in ("train", "test"):
            ds = open_torchvision(StanfordCars, tv_root, folder, display="Stanford Cars", layout=LAYOUT, split=split)
            ids = relative_ids((p for p, _ in ds._samples), link)
            labels = [int(t) for _, t in ds._samples]
            classes = classes or [str(c).replace("_", " ").strip() for c in ds.classes]
            if labels and not (0 <= min(labels) and max(labels) < len(classes)):
                raise MakdError(f"Stanford Cars: {split} annotations name classes outside devkit/cars_meta.mat")
            missing = f"is missing; expected {LAYOUT}"
            splits[split] = native_split(folder, ids, labels, display="Stanford Cars", missing=missing)
    return DatasetSplits("cars", classes, splits["train"], splits["test"])
