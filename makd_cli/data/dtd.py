"""Describable Textures (47 textures) read with torchvision's ``DTD`` (no download).

Layout (the unpacked dtd-r1.0.1.tar.gz; PATH may be that dtd/ folder, or torchvision's root that
holds dtd/dtd/)::

    dtd/
        images/<texture>/<texture>_<n>.jpg
        labels/train1.txt  labels/val1.txt  labels/test1.txt   "<texture>/<file>.jpg"

Partition 1 is used, train and val together as train (3,760) and test as test (1,880).
"""

from __future__ import annotations

from pathlib import Path

from makd_cli.data.base import DatasetSplits, Split
from makd_cli.data.native import (
    check_first_file,
    find_native_folder,
    native_split,
    open_torchvision,
    relative_ids,
    torchvision_root,
)
from makd_cli.data.layout import Layout
from makd_cli.data.registry import register_dataset

BASE = "dtd/dtd"  # torchvision looks for <root>/dtd/dtd/
PARTITION = 1
FILES = ("images", f"labels/train{PARTITION}.txt", f"labels/val{PARTITION}.txt", f"labels/test{PARTITION}.txt")
LAYOUT = (
    f"dtd/ holding images/<texture>/*.jpg and labels/train{PARTITION}.txt, val{PARTITION}.txt, "
    f"test{PARTITION}.txt (the unpacked dtd-r1.0.1.tar.gz)"
)


@register_dataset("dtd", help="Describable Textures, partition 1, train+val/test (NAME:PATH to dtd/)",
                  layout=Layout(markers=("images/", f"labels/test{PARTITION}.txt"), under=("dtd", BASE), lookalikes=("images", "labels", "imdb")))
def load_dtd(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import DTD

    folder = find_native_folder(
        root, name="dtd", display="DTD", layout=LAYOUT, marker="labels/", files=FILES, base=BASE,
        example="dtd", under=("dtd", BASE),
    )
    parts = {}
    with torchvision_root(folder, BASE, "dtd") as (tv_root, link):
        for split in ("train", "val", "test"):
            ds = open_torchvision(DTD, tv_root, folder, display="DTD", layout=LAYOUT, split=split, partition=PARTITION)
            ids = relative_ids(ds._image_files, link)
            check_first_file(folder, ids, display="DTD", missing=f"(named in labels/{split}{PARTITION}.txt) is missing")
            # torchvision numbers the classes of each split file on its own: keep the names.
            parts[split] = (ids, [ds.classes[t] for t in ds._labels])
    names = sorted({n for _, split_names in parts.values() for n in split_names})
    index = {n: i for i, n in enumerate(names)}

    def make(*split_names: str) -> Split:
        ids = [i for s in split_names for i in parts[s][0]]
        labels = [index[n] for s in split_names for n in parts[s][1]]
        return native_split(folder, ids, labels)

    classes = [n.replace("_", " ") for n in names]
    return DatasetSplits("dtd", classes, make("train", "val"), make("test"))
