"""Waterbirds (landbird vs waterbird on land or water backgrounds), for group robustness.

Layout (the standard waterbird_complete95_forest2water2 folder; PATH may be it or the folder
holding it)::

    waterbird_complete95_forest2water2/
        metadata.csv   columns img_filename, y (0 landbird, 1 waterbird),
                       split (0 train, 1 val, 2 test), place (0 land, 1 water)
        <class folder>/<file>.jpg   (paths as in img_filename)

Train is split 0 and test is split 2; the val split (1) is not used. Every sample carries its
group y * 2 + place, so the worst group ("waterbird on land" in the usual shift) can be scored.

Every image also carries its CUB species (``fine_labels`` into ``fine_classes``), read from its
folder ("001.Black_footed_Albatross/..." -> "Black footed Albatross", CUB's own class names), so
per-class targets extracted for CUB's 200 species train LaViD on Waterbirds with one signature per
species while the head stays landbird/waterbird, as LaViD's reference does (train/loop.py).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from makd_cli.data.base import DatasetSplits, Split
from makd_cli.data.cub import clean_class_name
from makd_cli.data.native import find_native_folder, native_split
from makd_cli.data.layout import Layout
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

BASE = "waterbird_complete95_forest2water2"
CLASSES = ["landbird", "waterbird"]
GROUP_NAMES = ["landbird on land", "landbird on water", "waterbird on land", "waterbird on water"]
COLUMNS = ("img_filename", "y", "split", "place")
TRAIN_SPLIT, TEST_SPLIT = 0, 2
SPECIES_FOLDER = re.compile(r"^\d+\.\S")  # CUB's "001.Black_footed_Albatross"
LAYOUT = f"{BASE}/ holding metadata.csv (columns {', '.join(COLUMNS)}) and the images it names"


def read_metadata(path: Path) -> list[tuple[str, int, int, int]]:
    """(img_filename, y, split, place) per row."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise MakdError(f"Waterbirds: {path} lacks the column(s) {', '.join(missing)} (expected {LAYOUT})")
        rows = []
        for n, row in enumerate(reader, 2):
            try:
                y, split, place = (int(float(row[c])) for c in ("y", "split", "place"))
            except (TypeError, ValueError):
                raise MakdError(f"Waterbirds: {path} line {n} has a non-numeric y, split or place") from None
            if y not in (0, 1) or place not in (0, 1) or split not in (0, 1, 2):
                raise MakdError(f"Waterbirds: {path} line {n} has y/place outside 0-1 or split outside 0-2")
            rows.append((row["img_filename"].strip(), y, split, place))
    return rows


@register_dataset("waterbirds", help="Waterbirds with groups (label x place), train/test (NAME:PATH)",
                  layout=Layout(markers=("metadata.csv",), under=(BASE,)))
def load_waterbirds(root: Path | None, seed: int = 0) -> DatasetSplits:
    folder = find_native_folder(
        root, name="waterbirds", display="Waterbirds", layout=LAYOUT, marker="metadata.csv", base=BASE,
        not_found="lacks metadata.csv",
    )
    rows = read_metadata(folder / "metadata.csv")
    species = species_folders([r[0] for r in rows])
    fine_classes = [clean_class_name(f) for f in species]
    fine_of = {f: i for i, f in enumerate(species)}

    def make(split: int) -> Split:
        picked = [r for r in rows if r[2] == split]
        return native_split(
            folder,
            [r[0] for r in picked],
            [r[1] for r in picked],
            display="Waterbirds",
            missing="(named in metadata.csv) is missing",
            groups=[r[1] * 2 + r[3] for r in picked],
            fine_labels=[fine_of[r[0].split("/")[0]] for r in picked] if species else None,
        )

    return DatasetSplits(
        "waterbirds", list(CLASSES), make(TRAIN_SPLIT), make(TEST_SPLIT), group_names=list(GROUP_NAMES),
        fine_classes=fine_classes,
    )


def species_folders(filenames: list[str]) -> list[str]:
    """The CUB species folders ("001.Black_footed_Albatross") of the images, in CUB's numbering; none
    when some image is not inside such a folder (a relaid copy: no species signatures then)."""
    folders = {name.split("/")[0] for name in filenames}
    if any("/" not in name or not SPECIES_FOLDER.match(name.split("/")[0]) for name in filenames):
        return []
    return sorted(folders, key=lambda f: (int(f.split(".")[0]), f))
