"""FGVC-Aircraft (100 aircraft variants) read with torchvision's ``FGVCAircraft`` (no download).

Layout (the unpacked fgvc-aircraft-2013b.tar.gz; PATH may be that folder or the folder holding it)::

    fgvc-aircraft-2013b/data/
        variants.txt                     one class name a line
        images_variant_trainval.txt      "<image id> <variant>"
        images_variant_test.txt
        images/<image id>.jpg

Variant level, official split: trainval (6,667) as train, test (3,333) as test. Images keep the
20-pixel copyright banner at their bottom, as torchvision reads them.
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

BASE = "fgvc-aircraft-2013b"
FILES = (
    "data/variants.txt",
    "data/images_variant_trainval.txt",
    "data/images_variant_test.txt",
    "data/images",
)
LAYOUT = (
    "fgvc-aircraft-2013b/data/ holding variants.txt, images_variant_trainval.txt, "
    "images_variant_test.txt and images/*.jpg (the unpacked fgvc-aircraft-2013b.tar.gz)"
)


@register_dataset("aircraft", help="FGVC-Aircraft variants, trainval/test (NAME:PATH to fgvc-aircraft-2013b/)",
                  layout=Layout(markers=("data/variants.txt", "data/images_variant_test.txt"), under=(BASE,), lookalikes=("data",)))
def load_aircraft(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import FGVCAircraft

    folder = find_native_folder(
        root, name="aircraft", display="FGVC-Aircraft", layout=LAYOUT, marker="data/", files=FILES, base=BASE
    )
    splits, classes = {}, None
    with torchvision_root(folder, BASE, "aircraft") as (tv_root, link):
        for split in ("trainval", "test"):

            def explain(e: Exception, split=split) -> str | None:
                if isinstance(e, KeyError):
                    return f"FGVC-Aircraft: images_variant_{split}.txt names variant {e} missing from variants.txt"
                return None

            ds = open_torchvision(
                FGVCAircraft, tv_root, folder, display="FGVC-Aircraft", layout=LAYOUT, explain=explain,
                split=split, annotation_level="variant",
            )
            classes = classes or [c.replace("_", " ") for c in ds.classes]
            ids = relative_ids(ds._image_files, link)
            missing = f"is missing; expected {LAYOUT}"
            splits[split] = native_split(folder, ids, ds._labels, display="FGVC-Aircraft", missing=missing)
    return DatasetSplits("aircraft", classes, splits["trainval"], splits["test"])
