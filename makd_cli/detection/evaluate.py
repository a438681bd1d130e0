"""``makd eval`` on a detection run: COCO's AP, AP50, AP75, APs, APm, APl (pycocotools), in percent.

The detector runs on every image of the evaluated split (val2017 for ``--split test``), its boxes go
to pycocotools' ``COCOeval`` against the split's annotation file (up to 100 detections per image,
COCO's protocol), and runs of several seeds are averaged like classification runs (mean and standard
deviation over runs whose settings agree but the seed). Detections are cached in the run folder under
a key of the checkpoint's content and the evaluated images, so a second ``makd eval`` only re-scores.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from makd_cli.data.coco import CocoSplit, read_coco
from makd_cli.detection.data import read_image
from makd_cli.errors import MakdError
from makd_cli.evaluate.evaluators import CheckpointEvaluator, register_evaluator
from makd_cli.evaluate.protocols import mean_std_cell
from makd_cli.evaluate.report import GROUP_KEYS, aggregate_seeds, differing_settings, run_settings
from makd_cli.fileio import atomic_write_text, sha256_file, sha256_text

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
CACHE_VERSION = 1


def is_detection_file(path) -> bool:
    """Whether ``path`` is a detection checkpoint; a quick look (memory-mapped), any doubt says no
    and leaves the error to the full reader."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return isinstance(ckpt, dict) and ckpt.get("task") == "detection"
    except Exception:
        return False


def _ground_truth(split: CocoSplit):
    """pycocotools' COCO object of the split's annotation file; fields a user's own set may lack
    (area, iscrowd) are filled the way COCO defines them, and the annotations numbered 1..N: COCOeval
    counts a detection matched to annotation id 0 as unmatched (Roboflow exports number from 0) and
    indexes the annotations by id (missing or repeated ids fail or collide)."""
    from pycocotools.coco import COCO

    with open(split.annotation_file, "rb") as fh:
        doc = json.load(fh)
    for number, a in enumerate(doc["annotations"], start=1):
        a["id"] = number
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
    doc.setdefault("info", {})
    gt = COCO()
    gt.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt.createIndex()
    return gt


def coco_metrics(split: CocoSplit, detections: list[dict], image_ids: list[int] | None = None) -> dict:
    """AP figures in percent of ``detections`` (COCO result records: image_id, category_id, bbox xywh,
    score) on ``split``. No detection at all scores 0; a size class without objects is None."""
    from pycocotools.cocoeval import COCOeval

    from pycocotools.coco import COCO

    image_ids = list(split.image_ids if image_ids is None else image_ids)
    gt = _ground_truth(split)
    with contextlib.redirect_stdout(io.StringIO()):
        if detections:
            dt = gt.loadRes(copy.deepcopy(detections))
        else:  # loadRes cannot take an empty list; no detection scores 0 where the split has objects
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {m: (None if v < 0 else round(float(v) * 100, 4)) for m, v in zip(METRICS, ev.stats[:6])}


@torch.no_grad()
def detect(model, split: CocoSplit, category_ids: list[int], device: str, batch_size: int = 4) -> list[dict]:
    """COCO result records of ``model`` (an ``AspectDetector``) on every image of ``split``."""
    model.eval().to(device)
    records = []
    for start in range(0, len(split), batch_size):
        chunk = range(start, min(start + batch_size, len(split)))
        images = [read_image(split.paths[k]).to(device) for k in chunk]
        outputs, _ = model(images)
        for k, out in zip(chunk, outputs):
            boxes = out["boxes"].float().cpu().numpy()
            for (x1, y1, x2, y2), label, score in zip(boxes, out["labels"].tolist(), out["scores"].float().tolist()):
                records.append({"image_id": split.image_ids[k], "category_id": category_ids[label - 1],
                                "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                                "score": round(score, 5)})
    return records


def _cached_detections(path: str, data: str, split: CocoSplit, compute) -> list[dict]:
    key = sha256_text(json.dumps({"checkpoint": sha256_file(path), "data": data, "split": split.name,
                                  "images": sha256_text(json.dumps(split.ids)), "version": CACHE_VERSION}))[:20]
    file = Path(path).parent / f".eval-{Path(path).stem}-{split.name}-{key}.json"
    if file.is_file():
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError):  # a damaged cache is recomputed
            pass
    records = compute()
    try:
        for old in file.parent.glob(f".eval-{Path(path).stem}-{split.name}-*.json"):
            old.unlink(missing_ok=True)  # the boxes of an older checkpoint (a resumed run's last.pt): up to 100 per image each
        atomic_write_text(file, json.dumps(records))
    except (MakdError, OSError):
        pass
    return records


def evaluate_detection(path: str, ckpt: dict, data: str | None, split: str = "test", device: str = "cpu",
                       cache: bool = True) -> dict:
    """One detection checkpoint's COCO AP on ``data`` (default: the dataset it was trained on)."""
    from makd_cli.detection.model import build_detector

    data = data or ckpt["config"]["data"]
    name, _, root = data.partition(":")
    if name != "coco":
        raise MakdError(f"{path} is a detector; evaluate it on COCO-format data (--data coco:PATH), not {data!r}")
    coco = read_coco(root or None)
    if list(coco.classes) != list(ckpt["classes"]):
        raise MakdError(f"{path} was trained on other categories than {data} has; evaluate it on its own dataset")
    part = coco.val if split == "test" else coco.train
    cfg = ckpt["config"]

    def compute() -> list[dict]:
        sampling = ckpt["head"].get("sampling") or {}
        model = build_detector(ckpt["arch"], ckpt["num_classes"], int(ckpt["head"].get("extra_dim", 0)), None,
                               cfg.get("image_size"), **sampling, frozen_norm=bool(cfg.get("pretrained")),
                               aspect_level=ckpt["head"].get("aspect_level") or "image")
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError:
            raise MakdError(f"the weights of {path} do not fit a {ckpt['arch']} detector; the checkpoint is damaged") from None
        return detect(model, part, coco.category_ids, device)

    records = _cached_detections(path, data, part, compute) if cache else compute()
    return {
        "checkpoint": str(path), "data": data, "split": split, "task": "detection", "student": ckpt["arch"],
        "method": cfg["method"], "control": cfg.get("control"), "seed": cfg.get("seed"), "epochs": cfg.get("epochs"),
        "train_per_class": cfg.get("per_class"), "n": len(part), "detections": len(records),
        **coco_metrics(part, records), "settings": run_settings(ckpt),
    }


def detection_table(results: list[dict]) -> pd.DataFrame:
    """Runs that agree in every setting but the seed become one row: mean, ``<metric>_std`` and ``runs``."""
    differ = differing_settings(results)
    rows = []
    for r in results:
        row = {k: r.get(k) for k in GROUP_KEYS + ["seed"]}
        row.update({k: "-" if (r.get("settings") or {}).get(k) is None else str(r["settings"][k]) for k in differ})
        row.update({m: np.nan if r.get(m) is None else r[m] for m in METRICS})
        rows.append(row)
    df = pd.DataFrame(rows)
    df["control"] = df["control"].fillna("-")
    df["train_per_class"] = df["train_per_class"].fillna("all")
    table = aggregate_seeds(df, list(METRICS), differ)
    table.attrs["task"] = "detection"
    return table


def _cell(r, m: str) -> str:
    if pd.isna(r[m]):
        return "-"
    return mean_std_cell(r, m)


def show_detection(found: dict, *, split: str, fmt: str, as_json: bool, console) -> None:
    """``makd eval``'s output for detectors: JSON, csv, markdown or a terminal table, one row per setting."""
    table = found["table"]
    if as_json:
        print(json.dumps({"results": found["results"], "table": table.to_dict(orient="records")}, indent=1, default=str))
        return
    differ = list(table.attrs.get("differ", []))
    cols = ["method", "control", "student", *differ]
    if fmt == "csv":
        print(table.to_csv(index=False), end="")
        return
    if fmt == "markdown":
        print("| " + " | ".join(cols + ["runs", *METRICS]) + " |")
        print("|" + "---|" * (len(cols) + 1 + len(METRICS)))
        for _, r in table.iterrows():
            print("| " + " | ".join([str(r[c]) for c in cols] + [str(int(r["runs"]))] + [_cell(r, m) for m in METRICS]) + " |")
        return
    from rich.table import Table

    t = Table(title=f"{split} COCO box AP (%)")
    for col in (*cols, "runs", *METRICS):
        t.add_column(col, justify="left" if col in cols else "right")
    for _, r in table.iterrows():
        t.add_row(*(str(r[c]) for c in cols), str(int(r["runs"])), *(_cell(r, m) for m in METRICS))
    console.print(t)


register_evaluator("detection", help="COCO AP (AP, AP50, AP75, APs, APm, APl) of --task detection runs, seeds aggregated")(
    CheckpointEvaluator(claims=is_detection_file, evaluate=evaluate_detection, table=detection_table, show=show_detection,
                        exclusive="evaluate detection runs on their own (COCO AP), without classifiers and without --probe"))
