"""COCO-format detection datasets: ``--data coco:PATH``.

Layouts read (the first that fits):

- COCO's own: ``annotations/instances_<split>.json`` with the images in ``<split>/`` (or
  ``images/<split>/``): ``train2017`` / ``val2017``, and any other split names of that pattern
  (``train2014``, ``train``, ``val``, ``test``) for a user's own set.
- A Roboflow-style export: ``<split>/_annotations.coco.json`` beside the images of ``train/`` and
  ``valid/`` (or ``val/``, ``test/``).

The training split is the one whose name starts with ``train``; the evaluated one starts with ``val``
(else ``test``). Categories become classes in the order of their ids (COCO's 80 names); crowd and
degenerate boxes (width or height under one pixel once clipped to the image's width and height, when
the file gives them) are not trained on, as in Detectron2.

Two views of one dataset:

- :func:`read_coco` gives the detection view (``CocoSplit``: every image, its boxes and labels, the
  annotation file for pycocotools), used by ``makd train --task detection`` and ``makd eval``.
- The registered loader gives the usual ``DatasetSplits`` so ``makd extract --mllm ... --data coco:PATH``
  asks its questions per image: the images that hold at least one object (the detector's training
  set, as torchvision's reference drops the rest), each labelled with the category of its largest
  object (what the per-class controls group images by).
- ``coco-objects:PATH`` has one sample per training box instead, its crop labelled by its category
  (sample id ``<image id>#<k>``): per-object aspect targets for the detector's object-level head.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from makd_cli.data.base import DatasetSplits, Split, file_loader
from makd_cli.data.layout import Layout
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

ROBOFLOW_FILE = "_annotations.coco.json"
LAYOUT_HINT = ("expected COCO's layout (annotations/instances_train2017.json and train2017/, "
               "annotations/instances_val2017.json and val2017/) or <split>/_annotations.coco.json beside the images")


@dataclass
class CocoSplit:
    """One split of a COCO-format dataset: every image with its training boxes (x1, y1, x2, y2)."""

    name: str  # train2017, val2017, ...
    annotation_file: Path
    image_ids: list[int]  # COCO image ids, for pycocotools
    ids: list[str]  # sample ids: image paths relative to the dataset folder
    paths: list[Path]
    boxes: list[np.ndarray]  # per image (n, 4) float32, crowd and degenerate boxes left out
    labels: list[np.ndarray]  # per image (n,) int64, 1..C (0 is the detector's background)

    def __len__(self) -> int:
        return len(self.ids)

    def with_objects(self) -> list[int]:
        """Positions of the images with at least one training box."""
        return [i for i, b in enumerate(self.boxes) if len(b)]


@dataclass
class CocoDataset:
    root: Path
    classes: list[str]
    category_ids: list[int]  # category id of class c (label c + 1)
    train: CocoSplit
    val: CocoSplit
    layout: str = "coco"
    extra: dict = field(default_factory=dict)


def _split_candidates(root: Path) -> dict[str, tuple[Path, Path]]:
    """{split name: (annotation file, image folder)} for every split the folder holds."""
    found: dict[str, tuple[Path, Path]] = {}
    ann_dir = root / "annotations"
    if ann_dir.is_dir():
        for f in sorted(ann_dir.glob("instances_*.json")):
            name = f.stem[len("instances_"):]
            folder = next((d for d in (root / name, root / "images" / name) if d.is_dir()), None)
            if folder is None:
                raise MakdError(f"{f} has no image folder: expected {root / name}/ (or {root / 'images' / name}/)")
            found[name] = (f, folder)
    if not found:
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            if (d / ROBOFLOW_FILE).is_file():
                found[d.name] = (d / ROBOFLOW_FILE, d)
    return found


def _pick(found: dict, prefixes: tuple[str, ...], what: str, root: Path) -> str:
    for prefix in prefixes:
        names = sorted(n for n in found if n.startswith(prefix))
        if names:
            return names[-1]  # train2017 over train2014
    raise MakdError(f"{root} has no {what} split (annotations/instances_{prefixes[0]}*.json or {prefixes[0]}*/{ROBOFLOW_FILE}); "
                    f"{LAYOUT_HINT}")


def _read_json(path: Path) -> dict:
    from makd_cli.fileio import read_text
    from makd_cli.jsonio import loads

    try:  # the shared readers: UTF-8, bounded depth, NaN/Infinity/1e400 refused
        doc = loads(read_text(path, "COCO annotation file"), str(path))
    except MakdError as exc:
        raise MakdError(f"{exc}; {LAYOUT_HINT}") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
        raise MakdError(f"{path} is not in COCO's format: it needs the lists \"images\", \"annotations\" and \"categories\"")
    return doc


def _categories(doc: dict, path: Path) -> tuple[list[int], list[str]]:
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in doc["categories"])
    except (KeyError, TypeError, ValueError):
        raise MakdError(f"{path}: every category needs an \"id\" and a \"name\"") from None
    if not cats:
        raise MakdError(f"{path} has no categories")
    return [c for c, _ in cats], [n for _, n in cats]


def _read_split(name: str, ann: Path, folder: Path, root: Path, label_of: dict[int, int]) -> CocoSplit:
    doc = _read_json(ann)
    try:
        images = [(int(im["id"]), str(im["file_name"])) for im in doc["images"]]
        # the image's size when the file gives it: boxes are clipped to it, as Detectron2 and torchvision do
        size = {int(im["id"]): (float(im.get("width") or math.inf), float(im.get("height") or math.inf)) for im in doc["images"]}
        boxes: dict[int, list] = {i: [] for i, _ in images}
        labels: dict[int, list] = {i: [] for i, _ in images}
        for a in doc["annotations"]:
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                raise MakdError(f"{ann}: annotation {str(a.get('id'))[:20]} has the box {a['bbox']!r}; box numbers must be finite")
            cat = int(a["category_id"])
            if cat not in label_of:
                raise MakdError(f"{ann}: annotation {a.get('id')} has category {cat}, which the categories of the "
                                f"training split lack")
            if int(a["image_id"]) not in boxes:
                continue
            width, height = size[int(a["image_id"])]
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            boxes[int(a["image_id"])].append((x1, y1, x2, y2))
            labels[int(a["image_id"])].append(label_of[cat])
    except (KeyError, TypeError, ValueError) as exc:
        raise MakdError(f"{ann}: an image or annotation lacks a field COCO's format has ({exc}); {LAYOUT_HINT}") from None
    if not images:
        raise MakdError(f"{ann} lists no images")
    _check_images(images, size, ann)
    paths = [folder / f for _, f in images]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MakdError(f"{len(missing)} of the {len(paths)} images of {ann.name} are missing (first: {missing[0]})")
    ids = [Path(os.path.relpath(p, root)).as_posix() for p in paths]
    return CocoSplit(
        name=name, annotation_file=ann, image_ids=[i for i, _ in images], ids=ids, paths=paths,
        boxes=[np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4) for i, _ in images],
        labels=[np.asarray(labels[i], dtype=np.int64) for i, _ in images],
    )


def _check_images(images: list[tuple[int, str]], size: dict, ann: Path) -> None:
    """Each image id once, each file inside the image folder, each size finite: one line otherwise."""
    seen: dict[int, str] = {}
    for i, name in images:
        if i in seen:
            raise MakdError(f"{ann}: image id {i} is given twice ({seen[i]!r} and {name!r}); ids must be unique")
        seen[i] = name
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts:
            raise MakdError(f"{ann}: image {i} has file_name {name!r}, which leaves the image folder; give a path inside it")
    bad = next((i for i, (w, h) in size.items() if math.isnan(w) or math.isnan(h) or w <= 0 or h <= 0), None)
    if bad is not None:
        raise MakdError(f"{ann}: image {bad} has width x height {size[bad][0]} x {size[bad][1]}; give positive numbers")


@lru_cache(maxsize=4)
def _read_cached(root: str, stamp: tuple) -> CocoDataset:
    root_path = Path(root)
    found = _split_candidates(root_path)
    if not found:
        raise MakdError(f"{root_path} has no COCO annotation files; {LAYOUT_HINT}")
    train_name = _pick(found, ("train",), "training", root_path)
    val_name = _pick(found, ("val", "test"), "validation", root_path)
    cat_ids, classes = _categories(_read_json(found[train_name][0]), found[train_name][0])
    label_of = {c: k + 1 for k, c in enumerate(cat_ids)}
    train = _read_split(train_name, *found[train_name], root_path, label_of)
    val = _read_split(val_name, *found[val_name], root_path, label_of)
    layout = "coco" if found[train_name][0].parent.name == "annotations" else "roboflow"
    return CocoDataset(root_path, classes, cat_ids, train, val, layout)


def read_coco(root: Path | str | None) -> CocoDataset:
    """The detection view of ``--data coco:PATH`` (read once per process while the files are unchanged)."""
    if root is None:
        raise MakdError("coco needs a path: --data coco:/path/to/coco (annotations/ and train2017/, val2017/)")
    root = Path(root).expanduser()
    if root.is_file():  # the annotation file itself, a common slip
        raise MakdError(f"{root} is a file; give the dataset folder: --data coco:FOLDER ({LAYOUT_HINT})")
    if not root.is_dir():
        raise MakdError(f"dataset folder {root} does not exist")
    stamp = tuple(sorted((str(f), f.stat().st_mtime_ns) for f in list(root.glob("annotations/instances_*.json"))
                         + list(root.glob(f"*/{ROBOFLOW_FILE}"))))
    return _read_cached(str(root.resolve()), stamp)


def _classification_split(split: CocoSplit) -> Split:
    """The images with objects, each labelled by the category of its largest box (0-based)."""
    keep = split.with_objects()
    labels = []
    for i in keep:
        b = split.boxes[i]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        labels.append(int(split.labels[i][int(np.argmax(area))]) - 1)
    return Split([split.ids[i] for i in keep], labels, file_loader([split.paths[i] for i in keep]))


OBJECT_SEP = "#"  # object sample ids: <image id>#<box position among the image's training boxes>


def object_ids(split: CocoSplit, positions: list[int]) -> list[str]:
    """Sample ids of the training boxes of images ``positions``, in order (``coco-objects``' ids)."""
    return [f"{split.ids[k]}{OBJECT_SEP}{j}" for k in positions for j in range(len(split.boxes[k]))]


def _object_split(split: CocoSplit) -> Split:
    """One sample per training box: the box's crop of its image, labelled by its category."""
    rows = [(k, j) for k in split.with_objects() for j in range(len(split.boxes[k]))]

    def load(i: int) -> Image.Image:
        k, j = rows[i]
        x1, y1, x2, y2 = split.boxes[k][j].tolist()
        with Image.open(split.paths[k]) as im:
            return im.convert("RGB").crop((math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)))

    return Split(object_ids(split, split.with_objects()), [int(split.labels[k][j]) - 1 for k, j in rows], load)


@register_dataset("coco-objects", help="the objects of a COCO-format set, one crop per box (per-object aspect targets: "
                                       "makd extract --mllm ... --data coco-objects:PATH)")
def load_coco_objects(root: Path | None, seed: int = 0) -> DatasetSplits:
    ds = read_coco(root)
    return DatasetSplits("coco-objects", list(ds.classes), _object_split(ds.train), _object_split(ds.val))


@register_dataset("coco", help="COCO-format detection: annotations/instances_{train,val}2017.json + train2017/ val2017/, "
                               "or <split>/_annotations.coco.json (makd train --task detection)",
                  layout=Layout(markers=(f"annotations/instances_train*.json|train*/{ROBOFLOW_FILE}",),
                                lookalikes=("annotations", "train2017", "val2017", "train2014", "val2014")))
def load_coco(root: Path | None, seed: int = 0) -> DatasetSplits:
    ds = read_coco(root)
    train, test = _classification_split(ds.train), _classification_split(ds.val)
    return DatasetSplits("coco", list(ds.classes), train, test)
