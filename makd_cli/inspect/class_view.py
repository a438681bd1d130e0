"""One class in depth: the aspects the teacher finds most and least likely for it, next to the
other classes' average, and the classes whose targets are closest to it."""

from __future__ import annotations

import numpy as np

from makd_cli.cli_output import bold, styled
from makd_cli.errors import MakdError
from makd_cli.formats.targets import Targets, read_targets
from makd_cli.inspect.heatmap import class_question_matrix, shorten
from makd_cli.inspect.question import question_text, questions_by_id, some_ids
from makd_cli.inspect.terminal import bar
from makd_cli.inspect.views import ViewRequest, register_view, save_figure


def find_class(classes: list[str], name: str | None, where: str = "the targets") -> int:
    """Position of class ``name``: exact, then case-insensitive, then a unique prefix."""
    if name is None:
        raise MakdError(f"name a class with --class NAME; {where} has: {some_ids(list(classes))}")
    if name in classes:
        return list(classes).index(name)
    lowered = [c.lower() for c in classes]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    starts = [i for i, c in enumerate(lowered) if c.startswith(name.lower())]
    if len(starts) == 1:
        return starts[0]
    hint = f"did you mean {', '.join(classes[i] for i in starts[:5])}? " if starts else ""
    raise MakdError(f"unknown class {name!r}; {hint}{where} has: {some_ids(list(classes))}")


def class_aspects(t: Targets, c: int) -> tuple[np.ndarray, np.ndarray, list[int | None], str]:
    """Per question: this class's value, the other classes' mean of it, the option shown (mcq) and the meaning."""
    others = np.arange(len(t.classes)) != c
    if t.kind == "class_mcq":
        best = t.probs[c].argmax(axis=1)
        q = np.arange(t.probs.shape[1])
        value = t.probs[c, q, best]
        mean_others = t.probs[others][:, q, best].mean(axis=0) if others.any() else np.full(len(q), np.nan)
        return value, mean_others, best.tolist(), "p(most likely option)"
    mat, meaning = class_question_matrix(t)
    if t.per_image and not np.any(t.labels == c):
        raise MakdError(f"the per-image targets hold no image of class {t.classes[c]!r}")
    mean_others = mat[others].mean(axis=0) if others.any() else np.full(mat.shape[1], np.nan)
    return mat[c], mean_others, [None] * mat.shape[1], meaning


def nearest_classes(t: Targets, c: int, k: int = 5) -> list[tuple[str, float]]:
    if t.per_image:
        mat = class_question_matrix(t)[0]
    else:
        mat = t.probs.reshape(len(t.classes), -1)
    d = np.sqrt(((mat - mat[c]) ** 2).sum(axis=1))
    d[c] = np.inf
    order = np.argsort(d, kind="stable")[: min(k, len(d) - 1)]
    return [(t.classes[i], float(d[i])) for i in order]


@register_view("class", help="one class: its most and least likely aspects and its closest classes")
def class_view(req: ViewRequest) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = read_targets(req.source)
    c = find_class(list(t.classes), req.class_name, str(req.source))
    name = t.classes[c]
    value, others, option, meaning = class_aspects(t, c)
    qs = questions_by_id(req.questions)
    ids = list(t.question_ids) if t.kind != "image_clip" else list(t.classes)

    def label(j: int) -> str:
        qid = ids[j]
        text = question_text(qs.get(qid), qid, name) if t.kind != "image_clip" else f"description of {qid}"
        if option[j] is not None:
            q = qs.get(qid)
            opt = q.options[option[j]] if q is not None and q.options else (t.option_labels[option[j]] if t.option_labels else str(option[j] + 1))
            text += f" -> {opt}"
        return text

    k = req.top or 10
    order = np.argsort(-value, kind="stable")
    if len(order) <= 2 * k:
        panels = [("all aspects, most likely first", order)]
    else:
        panels = [(f"{k} most likely aspects", order[:k]), (f"{k} least likely aspects", order[::-1][:k])]
    near = nearest_classes(t, c)
    rows = [{"question_id": ids[j], "text": label(j), "value": round(float(value[j]), 4),
             "others_mean": round(float(others[j]), 4)} for j in order]

    if req.output:
        n = sum(len(p[1]) for p in panels)
        fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.2 + 0.3 * n + 0.6 * len(panels)), squeeze=False,
                                 gridspec_kw={"height_ratios": [len(p[1]) for p in panels]})
        lo = min(0.0, float(np.nanmin(value)), float(np.nanmin(others)))
        hi = max(1.0, float(np.nanmax(value)), float(np.nanmax(others))) if meaning.startswith(("p(", "mean p")) else \
            max(float(np.nanmax(value)), float(np.nanmax(others)))
        for ax, (title, idx) in zip(axes[:, 0], panels):
            y = np.arange(len(idx))
            ax.barh(y, value[idx], color="#2a9d8f", height=0.7, label=name)
            ax.scatter(others[idx], y, marker="|", s=220, color="black", linewidths=2, label="mean of the other classes", zorder=3)
            ax.set_yticks(y, [shorten(label(j), 70) for j in idx], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlim(lo, hi)
            ax.set_title(title, fontsize=9, loc="left")
            ax.grid(axis="x", alpha=0.3)
        axes[-1, 0].set_xlabel(meaning)
        axes[0, 0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=7, frameon=False)
        near_text = ", ".join(f"{n_} ({d:.2f})" for n_, d in near)
        fig.suptitle(f"{name}: {t.kind} targets from {t.teacher or 'unknown teacher'}\nclosest classes by targets: {shorten(near_text, 110)}",
                     fontsize=9)
        fig.tight_layout()
        save_figure(fig, req.output)
    if req.terminal and not req.as_json:
        req.console.print(styled(bold(name), f": {meaning} per aspect (| marks the other classes' mean)"), highlight=False)
        lo_t, hi_t = (0.0, 1.0) if meaning.startswith(("p(", "mean p")) else (float(np.min(value)), float(np.max(value)))
        room = max(20, req.console.width - 32)
        for title, idx in panels:
            req.console.print(bold(title))
            for j in idx:
                cells = list(bar(float(value[j]), 20, lo_t, hi_t))
                pos = int(round((float(others[j]) - lo_t) / ((hi_t - lo_t) or 1) * 19)) if np.isfinite(others[j]) else None
                if pos is not None and 0 <= pos < 20:
                    cells[pos] = "|"
                req.console.print(f"  {float(value[j]):6.3f} {''.join(cells)}  {shorten(label(j), room)}", highlight=False, markup=False)
        req.console.print("closest classes by targets: " + ", ".join(f"{n_} ({d:.2f})" for n_, d in near), highlight=False)
    return {"view": "class", "class": name, "kind": t.kind, "meaning": meaning, "aspects": rows,
            "closest_classes": [{"class": n_, "distance": round(d, 4)} for n_, d in near],
            "output": str(req.output) if req.output else None}
