"""One question in depth (lavid.txt Figure 2): every class's answer distribution over the options.

Classes are grouped by the option they most likely pick, so that classes the teacher answers
alike sit together: the relational structure a student learns from soft answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from makd_cli.cli_output import bold, styled
from makd_cli.errors import MakdError
from makd_cli.formats.questions import PLACEHOLDER, Question, read_questions
from makd_cli.formats.targets import Targets, read_targets
from makd_cli.inspect.heatmap import draw_matrix, matrix_figure, shorten
from makd_cli.inspect.terminal import print_block_heatmap
from makd_cli.inspect.views import ViewRequest, register_view, save_figure


def some_ids(ids: list[str], n: int = 5) -> str:
    shown = ", ".join(ids[:n])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


def find_question(ids: list[str], spec: str | None, where: str = "the targets") -> int:
    """Position of question ``spec`` (an id, or a 1-based position) among ``ids``."""
    if spec is None:
        raise MakdError(f"name a question with --question ID; {where} has: {some_ids(ids)}")
    if spec in ids:
        return ids.index(spec)
    lowered = [i.lower() for i in ids]
    if spec.lower() in lowered:
        return lowered.index(spec.lower())
    if spec.isdigit() and 1 <= int(spec) <= len(ids):
        return int(spec) - 1
    raise MakdError(f"unknown question id {spec!r}; {where} has: {some_ids(ids)} (or give a position 1..{len(ids)})")


def questions_by_id(path: Path | None) -> dict[str, Question]:
    return {} if path is None else {q.id: q for q in read_questions(path)}


def question_text(q: Question | None, qid: str, class_name: str | None = None) -> str:
    if q is None:
        return qid
    return q.instantiate(class_name) if class_name else q.text.replace(PLACEHOLDER, "<object>")


def answer_matrix(t: Targets, j: int) -> tuple[np.ndarray, list[str]]:
    """Classes x options probabilities of question ``j`` and default option labels."""
    if t.kind == "class_mcq":
        M = t.probs.shape[2]
        labels = list(t.option_labels) if t.option_labels else [str(m + 1) for m in range(M)]
        return t.probs[:, j, :], labels
    if t.kind in ("class_yesno", "image_yesno"):
        if t.kind == "class_yesno":
            p = t.probs[:, j]
        else:
            C = len(t.classes)
            p = np.bincount(t.labels, weights=t.probs[:, j], minlength=C) / np.maximum(np.bincount(t.labels, minlength=C), 1)
        return np.stack([p, 1 - p], axis=1), ["yes", "no"]
    raise MakdError(f"--view question needs mcq or yes/no targets; this file holds {t.kind} "
                    "(use --view heatmap or --view class for it)")


def group_order(mat: np.ndarray) -> np.ndarray:
    """Classes sorted by their most likely option, then by how sure they are of it."""
    best = mat.argmax(axis=1)
    return np.lexsort((-mat.max(axis=1), best))


@register_view("question", help="one question: every class's probability of each option (LaViD Figure 2)")
def question_view(req: ViewRequest) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    t = read_targets(req.source)
    j = find_question(list(t.question_ids), req.question, str(req.source))
    qid = t.question_ids[j]
    mat, option_labels = answer_matrix(t, j)
    q = questions_by_id(req.questions).get(qid)
    if req.questions is not None and q is None:
        raise MakdError(f"{req.questions} has no question {qid}; pass the questions file these targets answer")
    options = [f"{lab}: {txt}" for lab, txt in zip(option_labels, q.options)] if q is not None and q.options else option_labels
    text = question_text(q, qid)
    classes = np.array(t.classes)
    order = group_order(mat)
    if req.top:
        # the classes the teacher is surest about, still grouped by their answer
        sure = set(np.argsort(-mat.max(axis=1), kind="stable")[: req.top].tolist())
        order = np.array([i for i in order if i in sure])
    mat, classes = mat[order], classes[order]
    C, M = mat.shape
    if req.output:
        fig, ax, fs = matrix_figure(C, M)
        im = draw_matrix(ax, mat, list(classes), options, fs, cmap="magma", vmin=0, vmax=1, annotate=True, col_width=28,
                         col_rotation=0 if M <= 6 and max(len(o) for o in options) <= 14 else 60)
        kind = "p(option)" if t.kind == "class_mcq" else ("mean p(answer) per class" if t.per_image else "p(answer)")
        ax.set_xlabel(f"{shorten(text, 110)}\n[{qid}; teacher {t.teacher or 'unknown'}]", fontsize=max(fs, 8))
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01, label=kind)
        save_figure(fig, req.output)
    if req.terminal and not req.as_json:
        req.console.print(styled(bold(text), f"  ({qid})"), highlight=False)
        for lab, opt in zip(option_labels, options):
            if opt != lab:
                req.console.print(f"  {opt}", highlight=False)
        print_block_heatmap(req.console, mat, list(classes), option_labels, title="classes x options", cell_width=6, lo=0.0, hi=1.0)
    return {"view": "question", "question_id": qid, "text": text, "options": options, "classes": classes.tolist(),
            "matrix": np.round(mat, 4).tolist(), "answer": [options[k] for k in mat.argmax(axis=1)],
            "output": str(req.output) if req.output else None}
