"""t-SNE of aspect outputs (makd.txt Figure 4): the student's aspect outputs next to the teacher's
targets for the same test images, each point coloured by one aspect's p(yes).

MaKD students output logits of p(yes), so both sides are embedded as logits (the teacher's as
logit(p)); LaViD students regress the probabilities, so both sides are embedded as probabilities.
If the two pictures show the same groups, the student has taken over the teacher's structure.
"""

from __future__ import annotations

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.inspect.heatmap import shorten
from makd_cli.inspect.image_view import (aspect_head, image_transform, load_data, load_student, resolve_device,
                                         teacher_rows, teacher_targets)
from makd_cli.inspect.question import find_question, question_text, questions_by_id
from makd_cli.inspect.views import ViewRequest, register_view, save_figure

DEFAULT_LIMIT = 1000


def embed(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(x)
    x = x.reshape(n, -1).astype(np.float64)
    if np.allclose(x, x[0]):
        return np.zeros((n, 2))
    if n < 4:  # too few points for t-SNE: their first two principal components
        u, sv, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
        return np.pad(u * sv, ((0, 0), (0, max(0, 2 - u.shape[1]))))[:, :2]
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(x)


def pick_images(split, t, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` images of ``split`` that have teacher rows, a seeded random sample."""
    if t.per_image:
        have = set(t.images)
        idx = np.array([i for i, s in enumerate(split.ids) if s in have], dtype=np.int64)
    else:
        idx = np.arange(len(split))
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    return idx


def colour_values(p: np.ndarray, j: int, kind: str) -> tuple[np.ndarray, str, tuple]:
    if p.ndim == 3:  # mcq: expected option of question j
        M = p.shape[2]
        w = np.clip(p[:, j, :], 0, None)
        return (w / np.maximum(w.sum(-1, keepdims=True), 1e-9) * np.arange(1, M + 1)).sum(-1), f"expected option (1..{M})", (1, M)
    if kind in ("class_yesno", "image_yesno"):
        return p[:, j], "p(yes)", (0.0, 1.0)
    return p[:, j], "value", (None, None)


@register_view("tsne", help="t-SNE of the student's aspect outputs next to the teacher's targets (MaKD Figure 4)")
def tsne_view(req: ViewRequest) -> dict:
    if req.output is None:
        raise MakdError("--view tsne draws a picture: pass -o tsne.png (or .svg, .pdf)")
    opts = req.options or {}
    device = resolve_device(opts.get("device"))
    path, ckpt, model = load_student(req.source, device)
    head = aspect_head(ckpt, path, "tsne")
    t = teacher_targets(ckpt, head, opts.get("targets"))
    j = find_question(list(t.question_ids), req.question or t.question_ids[0], "the targets")
    ds = load_data(ckpt, opts.get("data"))
    limit = int(opts.get("limit") or DEFAULT_LIMIT)
    split, split_name = ds.test, "test"
    idx = pick_images(split, t, limit)
    if len(idx) == 0 and t.per_image:
        # per-image teachers usually answered the training images only
        split, split_name = ds.train, "train"
        idx = pick_images(split, t, limit)
    if len(idx) < 5:
        raise MakdError(f"t-SNE needs at least 5 images with teacher targets; found {len(idx)} in the {split_name} split")

    from makd_cli.evaluate.predict import predict

    sub = split.subset(idx)
    pred = predict(model, sub, image_transform(ckpt), batch_size=256, device=device)
    raw = pred["extra"][:, head.lo:head.hi]
    student_p = head.probs(pred["extra"])
    teacher_p, ok = teacher_rows(t, sub.ids, sub.labels)
    if head.sigmoid:
        pt = np.clip(teacher_p.reshape(len(idx), -1), 1e-4, 1 - 1e-4)
        teacher_x, space = np.log(pt / (1 - pt)), "logits"
    else:
        teacher_x, space = teacher_p.reshape(len(idx), -1), "probabilities"
    emb_s = embed(raw)
    if t.per_image:
        emb_t = embed(teacher_x)
    else:
        # per-class targets give every image of a class the same row: embed one point per class and
        # jitter its images around it, so the blob's size shows how many images sit there
        present, inverse = np.unique(sub.labels, return_inverse=True)
        first = np.array([np.flatnonzero(sub.labels == c)[0] for c in present])
        centres = embed(teacher_x[first])
        spread = float(np.ptp(centres, axis=0).max()) or 1.0
        emb_t = centres[inverse] + np.random.default_rng(0).normal(scale=0.02 * spread, size=(len(idx), 2))
    s_col, meaning, (vmin, vmax) = colour_values(student_p, j, t.kind)
    t_col, _, _ = colour_values(teacher_p, j, t.kind)
    if vmin is None:
        both = np.concatenate([s_col, t_col])
        vmin, vmax = float(both.min()), float(both.max())
    qid = t.question_ids[j]
    text = question_text(questions_by_id(req.questions).get(qid), qid)
    corr = float(np.corrcoef(s_col, t_col)[0, 1]) if np.std(s_col) > 0 and np.std(t_col) > 0 else None
    mae = float(np.mean(np.abs(student_p - teacher_p)))
    acc = float(100 * np.mean(pred["logits"].argmax(1) == pred["labels"]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    size = float(np.clip(3000 / len(idx), 6, 40))
    for ax, emb, col, title in ((axes[0], emb_s, s_col, f"student ({ckpt['arch']}, {head.method})"),
                                (axes[1], emb_t, t_col, f"teacher ({shorten(t.teacher or t.kind, 40)})")):
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=col, cmap="viridis", vmin=vmin, vmax=vmax, s=size, linewidths=0)
        ax.set_title(title, fontsize=10)
        if len(ds.classes) <= 20:  # name each class where most of its images lie
            for c in np.unique(sub.labels):
                mx, my = np.median(emb[sub.labels == c], axis=0)
                ax.annotate(shorten(ds.classes[c], 16), (mx, my), fontsize=7, ha="center", va="center",
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.6, "lw": 0})
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes, fraction=0.03, pad=0.02, label=f"{meaning} of the aspect")
    per = "" if t.per_image else " (per-class targets: one jittered blob per class)"
    fig.suptitle(f"t-SNE of aspect {space}, {len(idx)} {split_name} images{per}; colour: {shorten(text, 80)} [{qid}]"
                 + (f"\nstudent-teacher correlation on this aspect {corr:.2f}; mean |difference| over all aspects {mae:.3f}"
                    if corr is not None else f"\nmean |difference| over all aspects {mae:.3f}"), fontsize=9)
    save_figure(fig, req.output)
    if req.terminal and not req.as_json:
        req.console.print(f"t-SNE of {len(idx)} {split_name} images ({space}); aspect {qid}: "
                          f"student-teacher correlation {'n/a' if corr is None else f'{corr:.2f}'}, "
                          f"mean |difference| over all aspects {mae:.3f}, student top-1 on them {acc:.1f}%", highlight=False)
    return {"view": "tsne", "checkpoint": str(path), "split": split_name, "images": int(len(idx)), "space": space,
            "question_id": qid, "text": text, "correlation": corr, "mean_abs_difference": round(mae, 4), "top1": round(acc, 2),
            "output": str(req.output)}
