"""mini-ImageNet (100 ImageNet classes, 600 images each) for plain classification.

Layout (the common Ravi & Larochelle release; PATH may be it or the folder holding mini-imagenet/)::

    mini-imagenet/
        images/n0153282900000005.jpg ...
        train.csv  val.csv  test.csv     "filename,label" with label the WordNet id (n01532829)
        words.txt                        optional: "<wnid> <name>[, <other names>]" lines
                                         (LOC_synset_mapping.txt and synset_words.txt work too)

The csv files are few-shot splits with disjoint classes, so this reader follows the classification
protocol instead: it pools every row of the csv files present, then per class holds out a seeded
random sixth for test (500 train / 100 test of 600 images; at least one test image per class of
two or more). Class names are the WordNet ids, or the first name in a mapping file when present.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from makd_cli.data.base import DatasetSplits
from makd_cli.data.native import find_native_folder, native_split
from makd_cli.data.layout import Layout
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

CSV_FILES = ("train.csv", "val.csv", "test.csv")
MAPPING_FILES = ("words.txt", "LOC_synset_mapping.txt", "synset_words.txt")
TEST_FRACTION = 1 / 6
LAYOUT = "a folder holding images/*.jpg and train.csv, val.csv, test.csv with columns filename,label"


def read_rows(folder: Path) -> list[tuple[str, str]]:
    """(filename, wnid) of every row of the csv files present, each file once."""
    rows, seen = [], set()
    for name in CSV_FILES:
        path = folder / name
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"filename", "label"} <= set(reader.fieldnames or []):
                raise MakdError(f"mini-ImageNet: {path} needs a header line 'filename,label' (expected {LAYOUT})")
            for row in reader:
                fname, label = (row["filename"] or "").strip(), (row["label"] or "").strip()
                if fname and label and fname not in seen:
                    seen.add(fname)
                    rows.append((fname, label))
    if not rows:
        raise MakdError(f"mini-ImageNet: the csv files in {folder} list no images")
    return rows


def read_mapping(folder: Path) -> dict[str, str]:
    """wnid -> first name, from the first mapping file present (empty if none)."""
    path = next((folder / f for f in MAPPING_FILES if (folder / f).is_file()), None)
    if path is None:
        return {}
    mapping = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                mapping[parts[0]] = parts[1].split(",")[0].strip().replace("_", " ")
    return mapping


@register_dataset("mini-imagenet", help="mini-ImageNet pooled, seeded 5/6 train, 1/6 test per class (NAME:PATH)",
                  layout=Layout(markers=("images/", "train.csv|val.csv|test.csv"), under=("mini-imagenet", "mini_imagenet", "miniImageNet"), lookalikes=("images",)))
def load_mini_imagenet(root: Path | None, seed: int = 0, test_fraction: float = TEST_FRACTION) -> DatasetSplits:
    folder = find_native_folder(
        root, name="mini-imagenet", display="mini-ImageNet", layout=LAYOUT, marker=CSV_FILES, files=("images/",),
        example="mini-imagenet", under=("mini-imagenet", "mini_imagenet", "miniImageNet"),
        not_found=f"has none of {', '.join(CSV_FILES)}",
    )
    rows = read_rows(folder)
    wnids = sorted({label for _, label in rows})
    index = {w: i for i, w in enumerate(wnids)}
    ids = [f"images/{fname}" for fname, _ in rows]
    labels = np.array([index[label] for _, label in rows], dtype=np.int64)
    missing = f"is missing; the csv files name images under images/ ({LAYOUT})"
    pool = native_split(folder, ids, labels, display="mini-ImageNet", missing=missing)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(len(wnids)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(test_fraction * len(idx)))) if len(idx) > 1 else 0
        test_idx += idx[:k].tolist()
        train_idx += idx[k:].tolist()
    mapping = read_mapping(folder)
    classes = [mapping.get(w, w) for w in wnids]
    return DatasetSplits("mini-imagenet", classes, pool.subset(sorted(train_idx)), pool.subset(sorted(test_idx)))
