"""CUB-200-2011 (200 bird species) from its native layout.

Layout (the folder the CUB_200_2011.tgz archive unpacks to; PATH may be it or the folder holding it)::

    CUB_200_2011/
        images.txt              "<image id> <class folder>/<file>.jpg"
        image_class_labels.txt  "<image id> <class id, 1-based>"
        train_test_split.txt    "<image id> <1 = train, 0 = test>"
        classes.txt             "<class id> 001.Black_footed_Albatross"
        images/<class folder>/<file>.jpg

The official split is used (5,994 train / 5,794 test). Class names drop the number and the
underscores: "001.Black_footed_Albatross" -> "Black footed Albatross".
"""

from __future__ import annotations

import re
from pathlib import Path

from makd_cli.data.base import DatasetSplits, Split
from makd_cli.data.native import find_native_folder, native_split
from makd_cli.data.layout import Layout
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

BASE = "CUB_200_2011"
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images")
LAYOUT = (
    "CUB_200_2011/ holding images.txt, image_class_labels.txt, train_test_split.txt, classes.txt "
    "and images/<class>/<file>.jpg (the unpacked CUB_200_2011.tgz)"
)


def clean_class_name(raw: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    return re.sub(r"^\d+\.", "", raw.strip()).replace("_", " ").strip()


def _read_table(path: Path) -> dict[int, str]:
    """``"<int> <rest>"`` lines as {int: rest}."""
    table = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            key, _, rest = line.strip().partition(" ")
            if not key.isdigit() or not rest:
                raise MakdError(f"{path} line {n} is not '<number> <value>': {line.strip()[:80]!r}")
            table[int(key)] = rest.strip()
    return table


@register_dataset("cub", help="CUB-200-2011 birds, official split (NAME:PATH to CUB_200_2011/)",
                  layout=Layout(markers=("images.txt", "train_test_split.txt"), under=(BASE,), lookalikes=("images", "attributes", "parts"),
                                files=("image_class_labels.txt", "classes.txt")))
def load_cub(root: Path | None, seed: int = 0) -> DatasetSplits:
    folder = find_native_folder(
        root, name="cub", display="CUB-200-2011", layout=LAYOUT, marker="images.txt", files=FILES, base=BASE
    )
    images = _read_table(folder / "images.txt")
    labels = _read_table(folder / "image_class_labels.txt")
    is_train = _read_table(folder / "train_test_split.txt")
    class_table = _read_table(folder / "classes.txt")
    class_ids = sorted(class_table)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise MakdError(f"{folder / 'classes.txt'} should number its classes 1..N")
    classes = [clean_class_name(class_table[i]) for i in class_ids]

    split_rows: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    for image_id in sorted(images):
        if image_id not in labels or image_id not in is_train:
            raise MakdError(f"CUB-200-2011: image {image_id} of images.txt has no label or split line")
        label = int(labels[image_id]) - 1
        if not 0 <= label < len(classes):
            raise MakdError(f"CUB-200-2011: image {image_id} has class {label + 1}, outside classes.txt")
        ids, labs = split_rows["train" if is_train[image_id].strip() == "1" else "test"]
        ids.append("images/" + images[image_id])
        labs.append(label)

    def make(split: str) -> Split:
        ids, labs = split_rows[split]
        return native_split(
            folder, ids, labs, display="CUB-200-2011", missing=f"(named in images.txt) is missing; expected {LAYOUT}"
        )

    return DatasetSplits("cub", classes, make("train"), make("test"))
