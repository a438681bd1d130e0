"""``makd eval``: test metrics of one or more checkpoints, as a table or JSON.

Runs of several seeds (same data, student, method and options apart from the seed) are
aggregated as mean and standard deviation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from makd_cli.data import load_dataset
from makd_cli.data.transforms import eval_transform
from makd_cli.errors import MakdError
from makd_cli.evaluate.last_epoch import checkpoint_epoch, epoch_span
from makd_cli.evaluate.metrics import classification_metrics
from makd_cli.evaluate.predict import predict
from makd_cli.evaluate.unseen import UNSEEN_METRICS, held_out_sets, unseen_table_columns
from makd_cli.evaluate.protocols import TEST_MARK, TEST_NOTE, last_cell, mean_std_cell, protocol_label
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.formats.targets import read_targets
from makd_cli.input_hashes import warn_if_targets_changed
from makd_cli.methods.base import fine_target_rows, term_facts
from makd_cli.students import student_from_checkpoint


def aspect_agreement(ckpt: dict, pred: dict, targets, target_rows=None) -> dict | None:
    """How well the student's extra outputs match the teacher's targets on the evaluated images.
    ``target_rows``: per evaluated image, its row of per-class targets that name finer classes than
    the head (Waterbirds on CUB species targets, ``fine_target_rows``); None: the label is the row."""
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
        rows = pred["labels"] if target_rows is None else target_rows
        ref = targets.probs.reshape(len(targets.classes), -1)[rows]
    if ref.shape[1] != out.shape[1]:
        return {"note": f"target width {ref.shape[1]} differs from the head slice {out.shape[1]}"}
    info = next((t for t in head.get("terms") or [] if t.get("method") == name), {"method": name})
    facts = term_facts(info)  # what the method declared: its output activation and the metric that scores it
    yesno = targets.kind in ("class_yesno", "image_yesno") and facts.get("metric") == "yesno"
    student = 1 / (1 + np.exp(-out)) if facts.get("output") == "sigmoid" else out
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
                        batch_size: int = 256, device: str = "cpu", progress=None, cache: bool = True,
                        test_resize: int | None = None) -> dict:
    ckpt, data, ds = checkpoint_and_dataset(path, data, "evaluate")
    part = ds.test if split == "test" else ds.train
    resize = test_resize or ckpt["config"].get("test_resize")  # --test-resize, else the run's own

    def run_model() -> dict:
        model = student_from_checkpoint(ckpt).to(device)
        return predict(model, part, eval_transform(ckpt["image_size"], ckpt.get("native_size"), resize), batch_size, 0, device, progress,
                       what=split)

    pred = cached_predictions(path, data, part, ckpt, split, run_model, resize) if cache else run_model()
    groups = None if part.groups is None else part.groups[pred["index"]]
    metrics = classification_metrics(pred["logits"], pred["labels"], ds.classes, groups, ds.group_names)
    targets_path = targets_path or ckpt["config"].get("targets")
    targets = None
    if targets_path and ckpt["head"].get("slices"):
        try:
            targets = read_targets(targets_path)
            warn_if_targets_changed(ckpt, targets_path, path)
        except MakdError:
            if targets_path != ckpt["config"].get("targets"):
                raise  # the user named it: say what is wrong; a stale path from training is just skipped
    fine = None if targets is None or part.fine_labels is None else fine_target_rows(targets, ds.classes, ds.fine_classes)
    agreement = aspect_agreement(ckpt, pred, targets, None if fine is None else fine[part.fine_labels[pred["index"]]])
    cfg = ckpt["config"]
    if "makd" in (ckpt["head"].get("slices") or {}):  # MaKD's own figure beside the class head's
        metrics["top1_all_outputs"] = top1_all_outputs(pred["logits"], pred["extra"], pred["labels"])
    return {
        "checkpoint": str(path), "data": data, "split": split, "student": ckpt["arch"], "method": cfg["method"],
        "control": cfg.get("control"), "seed": cfg.get("seed"), "epochs": cfg.get("epochs"),
        "train_per_class": cfg.get("per_class"), "selected_by": protocol_label(ckpt), "selection": ckpt.get("selection"),
        "epoch": checkpoint_epoch(ckpt),
        **metrics, "aspect_agreement": agreement,
        "settings": run_settings(ckpt), "unreadable_images": pred.get("unreadable"),
    }


# selected_by: the checkpoint protocol (--select-by); runs chosen on the test split are never averaged with others.
GROUP_KEYS = ["data", "student", "method", "control", "train_per_class", "epochs", "selected_by"]
# Settings that do not change what a run learns (or are the seed, which aggregation is over).
NOT_A_SETTING = {"seed", "out", "resume", "quiet", "log", "workers", "device", "compile", "data", "student", "method", "control",
                 "per_class", "epochs", "select_by", "select_every"}


def run_settings(ckpt: dict) -> dict:
    """Every training setting that shapes the result, as printable values: runs are only averaged
    together when all of these agree (the targets by content, not by path)."""
    settings = {k: v if isinstance(v, (str, int, float, bool, type(None))) else json.dumps(v, sort_keys=True)
                for k, v in ckpt["config"].items() if k not in NOT_A_SETTING}
    settings.setdefault("init", "timm")  # runs from before --init (issue 25) were initialised as timm's
    settings.setdefault("test_resize", None)
    settings["targets_sha256"] = (ckpt["head"].get("targets_sha256") or "")[:12] or None
    if settings["targets_sha256"]:
        settings.pop("targets", None)  # the content decides, the path does not
    return settings


def differing_settings(results: list[dict]) -> list[str]:
    """The settings whose values differ between the evaluated runs (shown as columns, grouped by)."""
    keys = sorted({k for r in results for k in (r.get("settings") or {})})
    return [k for k in keys if len({json.dumps((r.get("settings") or {}).get(k), default=str) for r in results}) > 1]


def comparison_table(results: list[dict]) -> pd.DataFrame:
    differ = differing_settings(results)
    rows = []
    for r in results:
        row = {k: r.get(k) for k in GROUP_KEYS + ["seed"]}
        row.update({k: "-" if (r.get("settings") or {}).get(k) is None else str(r["settings"][k]) for k in differ})
        row.update({"top1": r["top1"], "top5": r["top5"], "mean_per_class": r["mean_per_class"]})
        if "top1_all_outputs" in r:
            row["top1_all_outputs"] = r["top1_all_outputs"]
        if "worst_group" in r:
            row["worst_group"] = r["worst_group"]
        ag = r.get("aspect_agreement") or {}
        if "mae" in ag:
            row["aspect_mae"] = ag["mae"]
        row.update(unseen_table_columns(r))  # eval --unseen on a run with held-out classes (evaluate/unseen.py)
        if r.get("last"):  # best and last (evaluate/last_epoch.py)
            row.update(epoch=r.get("epoch"), last_top1=r["last"]["top1"], last_epoch=r["last"]["epoch"])
        rows.append(row)
    df = pd.DataFrame(rows)
    df["control"] = df["control"].fillna("-")
    df["train_per_class"] = df["train_per_class"].fillna("all")
    df["selected_by"] = df["selected_by"].fillna("val")
    metrics = [c for c in ("top1", "top5", "mean_per_class", "worst_group", "aspect_mae", "top1_all_outputs", "last_top1",
                           *UNSEEN_METRICS) if c in df]
    table = aggregate_seeds(df, metrics, differ)
    table.attrs["held_out"] = held_out_sets(results)
    return table


def aggregate_seeds(df: pd.DataFrame, metrics: list[str], differ: list[str]) -> pd.DataFrame:
    """Runs (rows of ``df``) that agree in every setting but the seed become one row: the mean of each
    metric, its population standard deviation ``<metric>_std`` (0 for one run) and ``runs``."""
    grouped = df.groupby(GROUP_KEYS + differ, sort=False, dropna=False)
    table = grouped[metrics].mean()
    std = grouped[metrics].std(ddof=0).fillna(0.0)
    table = table.join(std.add_suffix("_std"))
    for col in ("epoch", "last_epoch"):  # the seeds' epochs, as one span (evaluate/last_epoch.py)
        if col in df:
            table[col] = grouped[col].agg(epoch_span)
    table["runs"] = grouped.size()
    table = table.reset_index()
    table.attrs["differ"] = differ  # the settings columns, for the printers
    return table


def top1_all_outputs(logits: np.ndarray, extra: np.ndarray, labels: np.ndarray) -> float:
    """MaKD's reported accuracy: the argmax over all C + Q outputs (its ``forward_test`` returns the whole
    widened output, mdistiller/distillers/_base.py:35, and ``validate`` takes its top-1, engine/utils.py:44),
    so an image whose largest output is an aspect logit counts as wrong."""
    both = np.concatenate([logits, extra], axis=1) if extra.size else logits
    return float((both.argmax(axis=1) == np.asarray(labels)).mean() * 100.0)


def cached_predictions(path: str, data: str, part, ckpt: dict, split: str, compute, resize: int | None = None) -> dict:
    """``compute()``'s predictions, cached in the checkpoint's folder under a key of the checkpoint's
    content, the evaluated images (ids and labels) and the evaluation settings: a second ``makd eval``
    of the same run loads them instead of running the network again. A folder that cannot be written
    just goes without a cache."""
    from makd_cli.fileio import atomic_path, sha256_file, sha256_text

    key = sha256_text(json.dumps({
        "checkpoint": sha256_file(path), "data": data, "split": split, "image_size": ckpt.get("image_size"),
        "native_size": ckpt.get("native_size"), "cache_version": PREDICTION_CACHE_VERSION,
        "images": sha256_text(json.dumps([list(part.ids), np.asarray(part.labels).tolist()])),
        **({"test_resize": resize} if resize else {}),
    }, sort_keys=True))[:20]
    file = Path(path).parent / f".eval-{Path(path).stem}-{split}-{key}.npz"
    if file.is_file():
        try:
            with np.load(file) as z:
                pred = {k: z[k] for k in ("logits", "extra", "labels", "index")}
                unreadable = json.loads(str(z["unreadable"]))
            if not cache_fits(pred, part, ckpt):
                raise ValueError("the cached arrays do not fit the checkpoint and the images")
            pred["ids"] = [part.ids[i] for i in pred["index"]]
            pred["unreadable"] = unreadable
            return pred
        except Exception:  # a damaged cache is recomputed, never trusted
            pass
    pred = compute()
    try:
        for old in Path(path).parent.glob(f".eval-{Path(path).stem}-{split}-*.npz"):
            old.unlink(missing_ok=True)  # predictions of an older checkpoint or dataset
        with atomic_path(file, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, logits=pred["logits"], extra=pred["extra"], labels=pred["labels"], index=pred["index"],
                         unreadable=np.asarray(json.dumps(pred.get("unreadable"))))
    except (MakdError, OSError):
        pass
    return pred


PREDICTION_CACHE_VERSION = 1
ALL_OUTPUTS = "top-1 (all outputs)"  # MaKD's scoring (top1_all_outputs); "-" for runs without a makd term


def cache_fits(pred: dict, part, ckpt: dict) -> bool:
    """Whether cached predictions have the shapes the checkpoint and the evaluated images give: one
    row per kept image, ``num_classes`` logit columns, the head's extra columns, finite numbers, and
    the images' own labels. A cache that does not fit (damaged, or written by something else) is
    recomputed, never trusted."""
    logits, extra, labels, index = (np.asarray(pred[k]) for k in ("logits", "extra", "labels", "index"))
    n, classes = len(index), int(ckpt.get("num_classes", -1))
    extra_dim = int((ckpt.get("head") or {}).get("extra_dim", 0) or 0)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer) or n > len(part.ids):
        return False
    if n and (index.min() < 0 or index.max() >= len(part.ids) or len(np.unique(index)) != n):
        return False
    if logits.shape != (n, classes) or labels.shape != (n,) or extra.shape[:1] != (n,) or (extra.ndim == 2 and extra.shape[1] != extra_dim):
        return False
    if not np.all(np.isfinite(logits)) or (extra.size and not np.all(np.isfinite(extra))):
        return False
    return bool(np.array_equal(labels, np.asarray(part.labels)[index]))


def format_markdown(table: pd.DataFrame) -> str:
    # The method and the checkpoint protocol always; the other keys where the runs differ.
    cols = [c for c in GROUP_KEYS if table[c].nunique() > 1 or c in ("method", "selected_by")] + list(table.attrs.get("differ", []))
    metrics = [("top1", "top-1"), ("top5", "top-5"), ("mean_per_class", "per-class")]
    if "worst_group" in table:
        metrics.append(("worst_group", "worst group"))
    if "top1_all_outputs" in table and table["top1_all_outputs"].notna().any():
        metrics.append(("top1_all_outputs", ALL_OUTPUTS))
    names = [c.replace("selected_by", "protocol") for c in cols]
    lines = ["| " + " | ".join(names + ["runs"] + [m[1] for m in metrics]) + " |", "|" + "---|" * (len(cols) + 1 + len(metrics))]
    last = "last_top1" in table
    if last:  # best and last: the chosen epoch, and the last epoch's top-1 (its epoch)
        lines[0] = lines[0][:-1] + "| epoch | last epoch top-1 |"
        lines[1] += "---|---|"
    for _, r in table.iterrows():
        lines.append("| " + " | ".join([str(r[c]) for c in cols] + [str(int(r["runs"]))] + [mean_std_cell(r, m[0]) for m in metrics]
                                       + ([str(r["epoch"]), last_cell(r)] if last else [])) + " |")
    if table["selected_by"].str.contains(TEST_MARK).any():
        lines += ["", TEST_NOTE + "."]
    return "\n".join(lines)
