"""Miniature copies of the fine-grained datasets' native layouts, for tests and dry runs.

Each ``make_<name>(root)`` writes a tiny copy (2-3 classes, a few 8x8 images) under ``root`` in
the exact native format (text lists, csv, MATLAB .mat files) and returns the PATH to give as
``--data NAME:PATH``. ``EXPECTED[name]`` says what the reader should find: the class names and the
train and test sizes. ``build_all(root)`` writes every layout and returns {name: PATH}.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def write_image(path: Path, color_index: int = 0, mode: str = "RGB", size: int = 8) -> Path:
    """A tiny solid image; the format follows the suffix (JPEG for .jpg, PNG for .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (size, size), COLORS[color_index % len(COLORS)])
    if mode != "RGB":
        im = im.convert(mode)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    im.save(path, format=fmt)
    return path


def _lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# --- CUB-200-2011 -------------------------------------------------------------------------------
CUB_RAW = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


def make_cub(root: Path) -> Path:
    """CUB_200_2011/ with 3 classes x 3 images; the third image of each class is test."""
    folder = root / "CUB_200_2011"
    images, labels, split = [], [], []
    image_id = 0
    for c, raw in enumerate(CUB_RAW):
        stem = raw.split(".", 1)[1].replace("footed", "Footed")
        for k in range(3):
            image_id += 1
            rel = f"{raw}/{stem}_{k + 1:04d}_{100 + image_id}.jpg"
            write_image(folder / "images" / rel, c)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {0 if k == 2 else 1}")
    _lines(folder / "images.txt", images)
    _lines(folder / "image_class_labels.txt", labels)
    _lines(folder / "train_test_split.txt", split)
    _lines(folder / "classes.txt", [f"{i + 1} {raw}" for i, raw in enumerate(CUB_RAW)])
    return folder


# --- Stanford Cars (torchvision layout) ----------------------------------------------------------
CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]


def _cars_annotations(path: Path, rows: list[tuple[str, int]]) -> None:
    from scipy.io import savemat

    dtype = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    annos = np.zeros((1, len(rows)), dtype=dtype)
    for i, (fname, cls) in enumerate(rows):
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 1, 7, 7)]
        annos[0, i] = (*box, np.array([[cls]], dtype=np.uint8), np.array([fname]))
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"annotations": annos})


def make_cars(root: Path, folder_name: str = "stanford_cars") -> Path:
    """<root>/stanford_cars/: 3 classes, 2 train and 1 test image each; returns torchvision's root."""
    from scipy.io import savemat

    folder = root / folder_name
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array([CARS_CLASSES], dtype=object)})
    train, test = [], []
    for c in range(len(CARS_CLASSES)):
        for k in range(2):
            train.append((f"{len(train) + 1:05d}.jpg", c + 1))
        test.append((f"{len(test) + 1:05d}.jpg", c + 1))
    for sub, rows in (("cars_train", train), ("cars_test", test)):
        for fname, cls in rows:
            write_image(folder / sub / fname, cls - 1)
    _cars_annotations(folder / "devkit" / "cars_train_annos.mat", train)
    _cars_annotations(folder / "cars_test_annos_withlabels.mat", test)
    return root if folder_name == "stanford_cars" else folder


# --- Oxford-IIIT Pet ----------------------------------------------------------------------------
PETS_RAW = [("Abyssinian", 1), ("american_bulldog", 2), ("great_pyrenees", 2)]  # (breed, species)
PETS_CLASSES = ["Abyssinian", "American Bulldog", "Great Pyrenees"]


def make_pets(root: Path) -> Path:
    """<root>/oxford-iiit-pet/: 3 breeds, 2 trainval and 1 test image each (one grayscale)."""
    folder = root / "oxford-iiit-pet"
    trainval, test = [], []
    breed_ids = {"Abyssinian": 1, "american_bulldog": 1, "great_pyrenees": 1}
    for c, (breed, species) in enumerate(PETS_RAW):
        for k in range(3):
            name = f"{breed}_{k + 1}"
            write_image(folder / "images" / f"{name}.jpg", c, mode="L" if (c, k) == (0, 0) else "RGB")
            (test if k == 2 else trainval).append(f"{name} {c + 1} {species} {breed_ids[breed]}")
    _lines(folder / "annotations" / "trainval.txt", trainval)
    _lines(folder / "annotations" / "test.txt", test)
    return root


# --- Oxford 102 Flowers -------------------------------------------------------------------------
FLOWERS_CLASSES = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]


def make_flowers(root: Path) -> Path:
    """<root>/flowers-102/: 9 images of labels 1-3; per class one trnid, one valid, one tstid."""
    from scipy.io import savemat

    folder = root / "flowers-102"
    labels = [1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i, lab in enumerate(labels, 1):
        write_image(folder / "jpg" / f"image_{i:05d}.jpg", lab - 1)
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(
        folder / "setid.mat",
        {
            k: np.array([v], dtype=np.uint16)
            for k, v in (("trnid", [1, 4, 7]), ("valid", [2, 5, 8]), ("tstid", [3, 6, 9]))
        },
    )
    return root


# --- FGVC-Aircraft ------------------------------------------------------------------------------
AIRCRAFT_CLASSES = ["707-320", "Cessna 172", "F-16A/B"]


def make_aircraft(root: Path) -> Path:
    """<root>/fgvc-aircraft-2013b/data/: 3 variants, 2 trainval and 1 test image each."""
    data = root / "fgvc-aircraft-2013b" / "data"
    trainval, test = [], []
    n = 0
    for c, variant in enumerate(AIRCRAFT_CLASSES):
        for k in range(3):
            n += 1
            image_id = f"{1000000 + n:07d}"
            write_image(data / "images" / f"{image_id}.jpg", c)
            (test if k == 2 else trainval).append(f"{image_id} {variant}")
    _lines(data / "variants.txt", AIRCRAFT_CLASSES)
    _lines(data / "images_variant_trainval.txt", trainval)
    _lines(data / "images_variant_test.txt", test)
    return root


# --- DTD ----------------------------------------------------------------------------------------
DTD_CLASSES = ["banded", "bubbly", "zigzagged"]


def make_dtd(root: Path, torchvision_layout: bool = True) -> Path:
    """DTD with 3 textures x 3 images, one each in train1, val1, test1 (plus other partitions).

    ``torchvision_layout`` writes <root>/dtd/dtd/ and returns root; otherwise writes the unpacked
    archive's <root>/dtd/ and returns that folder.
    """
    folder = root / "dtd" / "dtd" if torchvision_layout else root / "dtd"
    splits = {"train": [], "val": [], "test": []}
    for c, texture in enumerate(DTD_CLASSES):
        for k, split in enumerate(splits):
            rel = f"{texture}/{texture}_{k + 1:04d}.jpg"
            write_image(folder / "images" / rel, c)
            splits[split].append(rel)
    for split, rows in splits.items():
        _lines(folder / "labels" / f"{split}1.txt", rows)
        _lines(folder / "labels" / f"{split}2.txt", rows[::-1])  # another partition, unused
    return root if torchvision_layout else folder


# --- Caltech-101 --------------------------------------------------------------------------------
CALTECH_RAW = ["Faces_easy", "accordion", "water_lilly"]  # sorted as torchvision sorts them
CALTECH_CLASSES = ["Faces easy", "accordion", "water lilly"]
CALTECH_PER_CLASS = 4


def make_caltech101(root: Path) -> Path:
    """<root>/caltech-101/101_ObjectCategories/ with 3 classes x 4 images and BACKGROUND_Google."""
    folder = root / "caltech-101"
    cats = folder / "101_ObjectCategories"
    for c, name in enumerate(CALTECH_RAW + ["BACKGROUND_Google"]):
        for k in range(CALTECH_PER_CLASS):
            write_image(cats / name / f"image_{k + 1:04d}.jpg", c)
    return folder


# --- Waterbirds ---------------------------------------------------------------------------------
# (y, split, place) rows: every group twice in train, once in val and once in test.
WATERBIRDS_ROWS = [
    (y, s, p) for s, reps in ((0, 2), (1, 1), (2, 1)) for y in (0, 1) for p in (0, 1) for _ in range(reps)
]


def make_waterbirds(root: Path) -> Path:
    """<root>/waterbird_complete95_forest2water2/ with metadata.csv and its images."""
    folder = root / "waterbird_complete95_forest2water2"
    folder.mkdir(parents=True, exist_ok=True)
    bird_folders = {0: "016.Painted_Bunting", 1: "001.Black_footed_Albatross"}
    with open(folder / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        for i, (y, split, place) in enumerate(WATERBIRDS_ROWS, 1):
            rel = f"{bird_folders[y]}/{bird_folders[y].split('.')[1]}_{i:04d}.jpg"
            write_image(folder / rel, y * 2 + place)
            w.writerow([i, rel, y, split, place, f"/b/bamboo_forest/{i:08d}.jpg"])
    return folder


# --- mini-ImageNet ------------------------------------------------------------------------------
MINI_WNIDS = {"train.csv": "n01532829", "val.csv": "n01558993", "test.csv": "n01704323"}
MINI_WORDS = {
    "n01532829": "house finch, linnet, Carpodacus mexicanus",
    "n01558993": "robin, American robin",
    "n01704323": "triceratops",
}
MINI_PER_CLASS = 6


def make_mini_imagenet(root: Path, with_words: bool = False) -> Path:
    """<root>/mini-imagenet/ with one class per csv file, 6 images each; optional words.txt."""
    folder = root / "mini-imagenet"
    for c, (csv_name, wnid) in enumerate(MINI_WNIDS.items()):
        rows = [f"{wnid}{k + 1:08d}.jpg" for k in range(MINI_PER_CLASS)]
        for fname in rows:
            write_image(folder / "images" / fname, c)
        _lines(folder / csv_name, ["filename,label"] + [f"{fname},{wnid}" for fname in rows])
    if with_words:
        _lines(folder / "words.txt", [f"{w}\t{names}" for w, names in MINI_WORDS.items()])
    return folder


# --- COCO (detection) -----------------------------------------------------------------------------
COCO_CATEGORIES = [(1, "person"), (3, "car"), (7, "train")]  # COCO's ids are not contiguous


def make_coco(root: Path, whole_boxes: bool = False) -> Path:
    """coco/ in COCO's layout: annotations/instances_{train,val}2017.json, train2017/, val2017/.
    Train: 2 images per category (its largest box) plus one crowd-only image, which the
    classification view leaves out; val: one image per category. ``whole_boxes``: one box per
    image, the whole 8x8 image (``coco-objects``: every object crop is a whole image)."""
    import json

    folder = root / "coco"
    image_id = ann_id = 0
    for split, per_cat in (("train2017", 2), ("val2017", 1)):
        images, annotations = [], []
        for c, (cat_id, _) in enumerate(COCO_CATEGORIES):
            for _ in range(per_cat):
                image_id += 1
                name = f"{image_id:012d}.jpg"
                write_image(folder / split / name, c)
                images.append({"id": image_id, "file_name": name, "width": 8, "height": 8})
                other = COCO_CATEGORIES[(c + 1) % 3][0]
                boxes = ((cat_id, [0, 0, 8, 8]),) if whole_boxes else ((cat_id, [1, 1, 6, 6]), (other, [0, 0, 2, 3]))
                for cat, box in boxes:
                    ann_id += 1
                    annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": box,
                                        "area": box[2] * box[3], "iscrowd": 0})
        if split == "train2017":
            image_id += 1
            write_image(folder / split / f"{image_id:012d}.jpg", 3)
            images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 8, "height": 8})
            ann_id += 1
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [0, 0, 8, 8],
                                "area": 64, "iscrowd": 1})
        doc = {"images": images, "annotations": annotations,
               "categories": [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_CATEGORIES]}
        (folder / "annotations").mkdir(parents=True, exist_ok=True)
        (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return folder


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "cub": make_cub,
    "cars": make_cars,
    "pets": make_pets,
    "flowers": make_flowers,
    "aircraft": make_aircraft,
    "dtd": make_dtd,
    "caltech101": make_caltech101,
    "caltech101-lavid": make_caltech101,
    "waterbirds": make_waterbirds,
    "mini-imagenet": make_mini_imagenet,
    "coco": make_coco,
    "coco-objects": lambda root: make_coco(root, whole_boxes=True),
}

# name -> (class names, train size, test size) that the registered reader should report.
EXPECTED: dict[str, tuple[list[str], int, int]] = {
    "cub": (["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"], 6, 3),
    "cars": (CARS_CLASSES, 6, 3),
    "pets": (PETS_CLASSES, 6, 3),
    "flowers": (FLOWERS_CLASSES, 6, 3),
    "aircraft": (AIRCRAFT_CLASSES, 6, 3),
    "dtd": (DTD_CLASSES, 6, 3),
    "caltech101": (CALTECH_CLASSES, 9, 3),  # 30 train per class, but always one test image
    "caltech101-lavid": (CALTECH_CLASSES, 6, 6),  # LaViD's 4,310 / 8,677 of the 12 images, rounded
    "waterbirds": (["landbird", "waterbird"], 8, 4),
    "mini-imagenet": (sorted(MINI_WNIDS.values()), 15, 3),  # a sixth of 6 per class is test
    "coco": (["person", "car", "train"], 6, 3),  # the crowd-only training image is left out
    "coco-objects": (["person", "car", "train"], 6, 3),  # one object per image
}


def build_all(root: Path) -> dict[str, Path]:
    """Write every miniature layout under ``root/<name>/``; returns {name: PATH for --data}."""
    return {name: build(root / name) for name, build in BUILDERS.items()}
