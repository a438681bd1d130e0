"""Oxford-IIIT Pet (37 cat and dog breeds) read with torchvision's ``OxfordIIITPet`` (no download).

Layout (the two archives unpacked side by side; the folder may have any name, torchvision calls it
oxford-iiit-pet; PATH may be it or the folder holding it)::

    oxford-iiit-pet/
        images/<Breed_name>_<n>.jpg
        annotations/trainval.txt   "<image> <class 1-37> <species> <breed id>"
        annotations/test.txt

The official split is used: trainval (3,680) as train, test (3,669) as test. Class names are
torchvision's ("American Bulldog", "Abyssinian").
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

BASE = "oxford-iiit-pet"
FILES = ("images", "annotations/trainval.txt", "annotations/test.txt")
LAYOUT = (
    "oxford-iiit-pet/ holding images/*.jpg and annotations/trainval.txt, annotations/test.txt "
    "(images.tar.gz and annotations.tar.gz unpacked side by side)"
)


@register_dataset("pets", help="Oxford-IIIT Pet, trainval/test (NAME:PATH to oxford-iiit-pet/)",
                  layout=Layout(markers=("annotations/trainval.txt", "annotations/test.txt"), under=(BASE,), lookalikes=("images", "annotations")))
def load_pets(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import OxfordIIITPet

    folder = find_native_folder(
        root, name="pets", display="Oxford-IIIT Pet", layout=LAYOUT, marker="annotations/", files=FILES, base=BASE
    )
    with torchvision_root(folder, BASE, "pets") as (tv_root, link):
        datasets = {
            split: open_torchvision(
                OxfordIIITPet, tv_root, folder, display="Oxford-IIIT Pet", layout=LAYOUT, split=split
            )
            for split in ("trainval", "test")
        }
        # torchvision names classes per split; take the names from trainval, which holds every breed.
        classes = list(datasets["trainval"].classes)
        splits = {}
        for split, ds in datasets.items():
            ids = relative_ids(ds._images, link)
            labels = [int(t) for t in ds._labels]
            if labels and not (0 <= min(labels) and max(labels) < len(classes)):
                raise MakdError(f"Oxford-IIIT Pet: annotations/{split}.txt has classes missing from trainval.txt")
            missing = f"is missing; expected {LAYOUT}"
            splits[split] = native_split(folder, ids, labels, display="Oxford-IIIT Pet", missing=missing)
    return DatasetSplits("pets", classes, splits["trainval"], splits["test"])
