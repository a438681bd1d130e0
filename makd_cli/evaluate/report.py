"""``makd eval``: test metrics of one or more checkpoints, as a table or JSON.

Runs of several seeds (same data, student, method and options apart from the seed) are
aggregated as mean and standard deviation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from makd_cli.data import load_dataset
from makd_cli.data.transforms import eval_transform
from makd_cli.errors import MakdError
from makd_cli.evaluate.metrics import classification_metrics
from makd_cli.evaluate.predict import predict
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.formats.targets import read_targets
from makd_cli.students import student_from_checkpoint


def aspect_agreement(ckpt: dict, pred: dict, targets) -> dict | None:
    """How well the student's extra outputs match the teacher's targets on the evaluated images."""
    head = ckpt["head"]
    if targets is None or not head.get("slices"):
        return None
    if list(targets.question_ids) != list(head.get("question_ids", [])):
        raise MakdError("the targets' question ids differ from the ones the checkpoint was trained on; pass the training targets")
    name, (lo, hi) = next(iter(head["slices"].items()))
    out = pred["extra"][:, lo:hi]
    if targets.per_image:
        row = {img: i for i, img in enumerate(targets.images)}
        keep = [i for i, s in enumerate(pred["ids"]) if s in row]
        if not keep:
            return {"note": "the per-image targets do not cover the evaluated images"}
        ref = targets.probs.reshape(len(targets.images), -1)[[row[pred["ids"][i]] for i in keep]]
        out = out[keep]
    else:
        ref = targets.probs.reshape(len(targets.classes), -1)[pred["labels"]]
    if ref.shape[1] != out.shape[1]:
        return {"note": f"target width {ref.shape[1]} differs from the head slice {out.shape[1]}"}
    yesno = targets.kind in ("class_yesno", "image_yesno") and name == "makd"
    student = 1 / (1 + np.exp(-out)) if yesno else out
    result = {"method": name, "mae": float(np.mean(np.abs(student - ref)))}
    if yesno:
        from sklearn.metrics import roc_auc_score

        aucs = []
        for q in range(ref.shape[1]):
            y = ref[:, q] > 0.5
            aucs.append(float(roc_auc_score(y, student[:, q])) if 0 < y.sum() < len(y) else float("nan"))
        result["auc_per_question"] = aucs
        result["mean_auc"] = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else None
    return result


def checkpoint_and_dataset(path: str, data: str | None, verb: str):
    """A checkpoint and its dataset (``data`` or the one it was trained on), with matching classes."""
    ckpt = load_checkpoint(path)
    data = data or ckpt["config"]["data"]
    ds = load_dataset(data, seed=ckpt["config"].get("seed", 0))
    if list(ds.classes) != list(ckpt["classes"]):
        raise MakdError(f"{path} was trained on other classes than {data} has; {verb} it on its own dataset")
    return ckpt, data, ds


def evaluate_checkpoint(path: str, data: str | None = None, targets_path: str | None = None, split: str = "test",
                        batch_size: int = 256, device: str = "cpu", progress=None) -> dict:
    ckpt, data, ds = checkpoint_and_dataset(path, data, "evaluate")
    model = student_from_checkpoint(ckpt).to(device)
    part = ds.test if split == "test" else ds.train
    pred = predict(model, part, eval_transform(ckpt["image_size"], ckpt.get("native_size")), batch_size, 0, device, progress)
    metrics = classification_metrics(pred["logits"], pred["labels"], ds.classes, part.groups, ds.group_names)
    targets_path = targets_path or ckpt["config"].get("targets")
    targets = None
    if targets_path and ckpt["head"].get("slices"):
        try:
            targets = read_targets(targets_path)
        except MakdError:
            if targets_path != ckpt["config"].get("targets"):
                raise  # the user named it: say what is wrong; a stale path from training is just skipped
    agreement = aspect_agreement(ckpt, pred, targets)
    cfg = ckpt["config"]
    return {
        "checkpoint": str(path), "data": data, "split": split, "student": ckpt["arch"], "method": cfg["method"],
        "control": cfg.get("control"), "seed": cfg.get("seed"), "epochs": cfg.get("epochs"),
        "train_per_class": cfg.get("per_class"), **metrics, "aspect_agreement": agreement,
    }


GROUP_KEYS = ["data", "student", "method", "control", "train_per_class", "epochs"]


def comparison_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        row = {k: r.get(k) for k in GROUP_KEYS + ["seed"]}
        row.update({"top1": r["top1"], "top5": r["top5"], "mean_per_class": r["mean_per_class"]})
        if "worst_group" in r:
            row["worst_group"] = r["worst_group"]
        ag = r.get("aspect_agreement") or {}
        if "mae" in ag:
            row["aspect_mae"] = ag["mae"]
        rows.append(row)
    df = pd.DataFrame(rows)
    df["control"] = df["control"].fillna("-")
    df["train_per_class"] = df["train_per_class"].fillna("all")
    metrics = [c for c in ("top1", "top5", "mean_per_class", "worst_group", "aspect_mae") if c in df]
    grouped = df.groupby(GROUP_KEYS, sort=False, dropna=False)
    table = grouped[metrics].mean()
    std = grouped[metrics].std(ddof=0).fillna(0.0)
    table = table.join(std.add_suffix("_std"))
    table["runs"] = grouped.size()
    return table.reset_index()


def format_markdown(table: pd.DataFrame) -> str:
    cols = [c for c in GROUP_KEYS if table[c].nunique() > 1 or c == "method"]
    metrics = [("top1", "top-1"), ("top5", "top-5"), ("mean_per_class", "per-class")]
    if "worst_group" in table:
        metrics.append(("worst_group", "worst group"))
    lines = ["| " + " | ".join(cols + ["runs"] + [m[1] for m in metrics]) + " |", "|" + "---|" * (len(cols) + 1 + len(metrics))]
    for _, r in table.iterrows():
        def cell(name: str) -> str:
            return f"{r[name]:.2f}" + (f" ± {r[name + '_std']:.2f}" if r["runs"] > 1 else "")
        lines.append("| " + " | ".join([str(r[c]) for c in cols] + [str(int(r["runs"]))] + [cell(m[0]) for m in metrics]) + " |")
    return "\n".join(lines)
