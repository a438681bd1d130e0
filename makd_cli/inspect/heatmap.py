"""Targets heatmap (makd.txt Figure 3): classes x questions, ordered so that structure shows."""

from __future__ import annotations

import numpy as np

from makd_cli.formats.questions import read_questions
from makd_cli.formats.targets import Targets, read_targets
from makd_cli.inspect.terminal import print_block_heatmap
from makd_cli.inspect.views import ViewRequest, register_view, save_figure


def class_question_matrix(t: Targets) -> tuple[np.ndarray, str]:
    """One number per class and question, and what it means."""
    if t.kind == "class_mcq":
        m = t.probs.shape[2]
        return (t.probs * np.arange(1, m + 1)).sum(-1), f"expected option (1..{m})"
    if t.kind == "class_yesno":
        return t.probs, "p(yes)"
    if t.kind in ("image_yesno", "image_clip"):
        C = len(t.classes)
        sums = np.zeros((C, t.probs.shape[1]))
        np.add.at(sums, t.labels, t.probs)
        counts = np.bincount(t.labels, minlength=C)[:, None]
        return sums / np.maximum(counts, 1), "mean p(yes) per class" if t.kind == "image_yesno" else "mean p(description)"
    return t.probs, "value"


def cluster_order(x: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage clustering, so that similar rows sit together."""
    if len(x) < 3 or np.allclose(x, x[0]):
        return np.arange(len(x))
    from scipy.cluster.hierarchy import leaves_list, linkage

    return leaves_list(linkage(x, method="average", metric="euclidean"))


def shorten(label: str, width: int = 48) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def question_labels(t: Targets, questions_path) -> list[str]:
    if questions_path is None:
        return list(t.question_ids)
    texts = {q.id: q.text for q in read_questions(questions_path)}
    return [texts.get(i, i) for i in t.question_ids]


@register_view("heatmap", help="classes x questions heatmap of a targets file")
def heatmap_view(req: ViewRequest) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = read_targets(req.source)
    mat, meaning = class_question_matrix(t)
    rows, cols = np.array(t.classes), np.array(question_labels(t, req.questions) if t.kind != "image_clip" else t.classes)
    if req.top:
        # Keep the questions whose answers vary most across classes: they carry the information.
        keep_q = np.sort(np.argsort(-mat.std(axis=0), kind="stable")[: req.top])
        keep_c = np.arange(min(req.top, len(rows)))
        mat, rows, cols = mat[np.ix_(keep_c, keep_q)], rows[keep_c], cols[keep_q]
    ro, co = cluster_order(mat), cluster_order(mat.T)
    mat, rows, cols = mat[ro][:, co], rows[ro], cols[co]
    if req.output:
        C, Q = mat.shape
        fig, ax = plt.subplots(figsize=(min(4 + 0.28 * Q, 40), min(2 + 0.22 * C, 60)))
        im = ax.imshow(mat, aspect="auto", cmap="viridis", interpolation="nearest")
        fs = max(3, min(9, 400 / max(C, Q)))
        ax.set_yticks(range(C), [shorten(r) for r in rows], fontsize=fs)
        ax.set_xticks(range(Q), [shorten(c, 60) for c in cols], rotation=90, fontsize=fs)
        ax.set_title(f"{t.kind} targets from {t.teacher}: {meaning}")
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label=meaning)
        save_figure(fig, req.output)
    if req.terminal and not req.as_json:
        print_block_heatmap(req.console, mat, list(rows), list(cols), title=f"{t.kind}: {meaning}")
    return {"view": "heatmap", "kind": t.kind, "meaning": meaning, "classes": [str(r) for r in rows],
            "questions": [str(c) for c in cols], "matrix": np.round(mat, 4).tolist(), "output": str(req.output) if req.output else None}
