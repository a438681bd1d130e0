"""Accuracy metrics from logits and labels (numpy in, plain floats out)."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(100.0 * np.mean(np.any(topk == labels[:, None], axis=1)))


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    pred = logits.argmax(axis=1)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(cm) / np.maximum(totals, 1), np.nan)


def group_accuracy(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[int, float]:
    correct = logits.argmax(axis=1) == labels
    return {int(g): float(100.0 * correct[groups == g].mean()) for g in np.unique(groups)}


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str], groups=None, group_names=None) -> dict:
    cm = confusion_matrix(logits, labels, len(classes))
    pcs = per_class_accuracy(cm)
    out = {
        "n": int(len(labels)),
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "mean_per_class": float(np.nanmean(pcs)),
        "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, pcs)},
        "confusion": cm.tolist(),
    }
    if groups is not None:
        ga = group_accuracy(logits, labels, groups)
        names = group_names or [str(g) for g in range(max(ga) + 1)]
        out["per_group"] = {names[g]: a for g, a in ga.items()}
        out["worst_group"] = float(min(ga.values()))
    return out
