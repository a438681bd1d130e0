"""Targets heatmap (makd.txt Figure 3): classes x questions, ordered so that structure shows.

``draw_matrix`` is shared by the views that draw a labelled matrix (heatmap, question). It writes
the row and column labels as plain text rather than as axis ticks: with 200 classes x 50 questions
matplotlib's tick machinery alone took seconds, and plain text draws the same picture in a fraction.
"""

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
    label = " ".join(str(label).split())
    return label if len(label) <= width else label[: width - 1] + "…"


def compact_labels(labels, width: int) -> tuple[list[str], str]:
    """Labels that fit ``width`` and still differ: a long prefix they all share (question templates,
    "Does the <object> have ...") is dropped and returned separately, and what is still too long loses
    its middle, so that the distinguishing start and end both stay."""
    import os

    labels = [" ".join(str(x).split()) for x in labels]
    prefix = ""
    if len(labels) > 2:
        common = os.path.commonprefix(labels)
        common = common[: common.rfind(" ") + 1] if " " in common else ""
        if len(common) >= 15 and all(len(x) > len(common) for x in labels):
            prefix = common
    out = []
    for x in labels:
        x = "…" + x[len(prefix):] if prefix else x
        if len(x) > width:
            head = int(width * 0.6)
            x = x[:head] + "…" + x[-(width - head - 1):]
        out.append(x)
    return out, prefix.strip()


def question_labels(t: Targets, questions_path) -> list[str]:
    if questions_path is None:
        return list(t.question_ids)
    texts = {q.id: q.text for q in read_questions(questions_path)}
    return [texts.get(i, i) for i in t.question_ids]


def matrix_figure(n_rows: int, n_cols: int, row_label_len: int = 20, col_label_len: int = 20):
    """A figure sized so that every row and column gets a readable cell; returns (fig, ax, fontsize)."""
    import matplotlib.pyplot as plt

    cell_h = float(np.clip(16 / max(n_rows, 1), 0.13, 0.4))
    cell_w = float(np.clip(14 / max(n_cols, 1), 0.15, 0.9))
    fontsize = float(np.clip(min(cell_h, cell_w) * 72 * 0.7, 4.5, 9))
    # labels are drawn outside the axes; bbox_inches="tight" grows the canvas to hold them
    fig = plt.figure(figsize=(max(3.0, cell_w * n_cols) + 1.2, max(2.0, cell_h * n_rows)))
    ax = fig.add_axes((0.0, 0.0, 1.0 - 1.2 / fig.get_figwidth(), 1.0))
    return fig, ax, fontsize


def draw_matrix(ax, mat: np.ndarray, rows: list[str], cols: list[str], fontsize: float, cmap: str = "viridis",
                vmin=None, vmax=None, annotate: bool = False, row_width: int = 40, col_width: int = 60, col_rotation: int = 90):
    """imshow plus row labels on the left and column labels on top, as plain text (fast)."""
    C, Q = mat.shape
    im = ax.imshow(mat, aspect="auto", cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax)
    ax.set_xticks([])
    ax.set_yticks([])
    ty = ax.get_yaxis_transform()
    for i, r in enumerate(rows):
        ax.text(-0.006, i, shorten(r, row_width), transform=ty, ha="right", va="center", fontsize=fontsize)
    tx = ax.get_xaxis_transform()
    for j, c in enumerate(cols):
        ax.text(j, 1.006, shorten(c, col_width), transform=tx, ha="center" if col_rotation else "center",
                va="bottom", rotation=col_rotation, fontsize=fontsize)
    if annotate and C * Q <= 400:
        lo, hi = (np.nanmin(mat) if vmin is None else vmin), (np.nanmax(mat) if vmax is None else vmax)
        mid = (lo + hi) / 2
        for i in range(C):
            for j in range(Q):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=fontsize * 0.9,
                        color="black" if mat[i, j] > mid else "white")
    return im


def pick_top(mat: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` questions whose answers vary most across classes and the ``top`` most distinctive classes."""
    keep_q = np.sort(np.argsort(-mat.std(axis=0), kind="stable")[:top])
    dist = np.abs(mat[:, keep_q] - mat[:, keep_q].mean(axis=0)).mean(axis=1)
    keep_c = np.sort(np.argsort(-dist, kind="stable")[:top])
    return keep_c, keep_q


@register_view("heatmap", help="classes x questions heatmap of a targets file")
def heatmap_view(req: ViewRequest) -> dict:
    import matplotlib

    matplotlib.use("Agg")

    t = read_targets(req.source)
    mat, meaning = class_question_matrix(t)
    rows, cols = np.array(t.classes), np.array(question_labels(t, req.questions) if t.kind != "image_clip" else t.classes)
    ids = np.array(t.question_ids if t.kind != "image_clip" else t.classes)
    if req.top:
        # Keep the questions whose answers vary most across classes (they carry the information)
        # and the classes that differ most from the average class on them.
        keep_c, keep_q = pick_top(mat, req.top)
        mat, rows, cols, ids = mat[np.ix_(keep_c, keep_q)], rows[keep_c], cols[keep_q], ids[keep_q]
    ro, co = cluster_order(mat), cluster_order(mat.T)
    mat, rows, cols, ids = mat[ro][:, co], rows[ro], cols[co], ids[co]
    if req.output:
        C, Q = mat.shape
        fig, ax, fs = matrix_figure(C, Q)
        probs = meaning.startswith(("p(", "mean p"))
        row_labels, _ = compact_labels(rows, 40)
        col_labels, prefix = compact_labels(cols, 60)
        im = draw_matrix(ax, mat, row_labels, col_labels, fs, vmin=0 if probs else None, vmax=1 if probs else None,
                         annotate=C * Q <= 150)
        ax.set_xlabel(f"{t.kind} targets from {t.teacher or 'unknown teacher'}: {meaning}, "
                      f"{C} classes x {Q} {'descriptions' if t.kind == 'image_clip' else 'questions'}"
                      + (f'\nevery question begins "{shorten(prefix, 80)} …"' if prefix else ""), fontsize=max(fs, 7))
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label=meaning)
        save_figure(fig, req.output)
    if req.terminal and not req.as_json:
        print_block_heatmap(req.console, mat, list(rows), [str(c) for c in ids], title=f"{t.kind}: {meaning}")
    return {"view": "heatmap", "kind": t.kind, "meaning": meaning, "classes": [str(r) for r in rows],
            "question_ids": [str(i) for i in ids], "questions": [str(c) for c in cols],
            "matrix": np.round(mat, 4).tolist(), "output": str(req.output) if req.output else None}
