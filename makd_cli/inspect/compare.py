"""How far two teachers' targets agree (issue 15): before training anything, see how close a local
teacher comes to the paper's (a 1.5B GGUF against the published Qwen2.5-7B targets, say).

For the same classes and questions, per question and overall:
- ``argmax_agreement``: the share of classes whose most likely answer is the same for both teachers;
- ``mean_js``: the mean Jensen-Shannon divergence between their answer distributions, in bits
  (0 equal, 1 disjoint; a yes/no answer is the distribution [1 - p, p]);
- ``distance_correlation``: the Pearson correlation between the two teachers' class-distance matrices
  (Euclidean distances between class signatures, upper triangle): whether they find the same classes
  alike and the same ones apart, which is what a student learns from the targets. Per question it uses
  that question's answers alone; overall, the whole signatures. Word-embedding controls
  (``class_vector``) get this figure only.
Per-image targets are averaged per class first (as ``--quality`` does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from makd_cli.cli_output import bold, styled
from makd_cli.errors import MakdError
from makd_cli.formats.targets import Targets, read_targets
from makd_cli.inspect.views import ViewRequest, register_view
from makd_cli.quality import class_signatures


def _distributions(S: np.ndarray) -> np.ndarray:
    return np.concatenate([1.0 - S, S], axis=-1) if S.shape[-1] == 1 else S


def _js_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p, q = np.clip(p, 0, None), np.clip(q, 0, None)
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    m = (p + q) / 2

    def kl(a, b):
        return np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a, 1.0) / np.where(b > 0, b, 1.0)), 0.0), axis=-1)

    return np.clip((kl(p, m) + kl(q, m)) / 2, 0.0, 1.0)


def _distance_vector(X: np.ndarray) -> np.ndarray:
    X = X.reshape(len(X), -1)
    sq = np.sum(X * X, axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0))
    return d[np.triu_indices(len(X), 1)]


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return None if denom == 0 else float((a * b).sum() / denom)


def _aligned(a: Targets, b: Targets, where_b: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    Sa, pa = class_signatures(a)
    Sb, pb = class_signatures(b)
    names_a = [a.classes[i] for i in pa]
    names_b = {b.classes[i]: k for k, i in enumerate(pb)}
    missing = [c for c in names_a if c not in names_b]
    extra = sorted(set(names_b) - set(names_a))
    if missing or extra:
        raise MakdError(f"{where_b} has other classes than the first targets (missing {missing[:3]}, extra {extra[:3]}); "
                        "compare targets of the same class list")
    Sb = Sb[[names_b[c] for c in names_a]]
    if a.kind == "class_vector" or b.kind == "class_vector":
        return Sa, Sb, []
    if a.question_ids != b.question_ids:
        if sorted(a.question_ids) != sorted(b.question_ids):
            raise MakdError(f"{where_b} answers other questions than the first targets; compare targets of the same "
                            "questions file (import or extract both from it)")
        order = [b.question_ids.index(q) for q in a.question_ids]
        Sb = Sb[:, order]
    if _distributions(Sa).shape != _distributions(Sb).shape:
        raise MakdError(f"{where_b} has answers of shape {Sb.shape[1:]} but the first targets {Sa.shape[1:]}; "
                        "compare teachers of the same questions")
    return Sa, Sb, list(a.question_ids)


def compare_targets(a: Targets, b: Targets, where_b: str = "second targets") -> dict:
    """Agreement of ``b`` with ``a`` per question and overall (see the module docstring)."""
    Sa, Sb, qids = _aligned(a, b, where_b)
    if len(Sa) < 2:
        raise MakdError("comparing teachers needs at least two classes")
    overall = {"distance_correlation": _pearson(_distance_vector(Sa), _distance_vector(Sb))}
    per_question = []
    if qids:
        Pa, Pb = _distributions(Sa), _distributions(Sb)
        agree = Pa.argmax(-1) == Pb.argmax(-1)  # C x Q
        js = _js_bits(Pa, Pb)
        for k, qid in enumerate(qids):
            per_question.append({"id": qid, "argmax_agreement": float(agree[:, k].mean()), "mean_js": float(js[:, k].mean()),
                                 "distance_correlation": _pearson(_distance_vector(Pa[:, k]), _distance_vector(Pb[:, k]))})
        overall.update(argmax_agreement=float(agree.mean()), mean_js=float(js.mean()))
    return {"teacher": b.teacher, "kind": b.kind, "classes": len(Sa), "questions": len(qids), "overall": overall,
            "questions_detail": per_question}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


@register_view("compare", help="agreement of other teachers' targets with this one (--compare B.h5)")
def compare_view(req: ViewRequest) -> dict:
    others = [Path(p) for p in (req.options or {}).get("compare") or []]
    if not others:
        raise MakdError("--view compare needs --compare B.h5 (repeat it for more teachers)")
    if req.output is not None:
        raise MakdError("--compare draws no picture; drop -o (use --json for the numbers)")
    a = read_targets(req.source)
    results = [{"source": str(p), **compare_targets(a, read_targets(p), str(p))} for p in others]
    texts = {}
    if req.questions is not None:
        from makd_cli.formats.questions import read_questions

        texts = {q.id: q.text for q in read_questions(req.questions)}
    if not req.as_json:
        from rich.table import Table

        for r in results:
            o = r["overall"]
            req.console.print(styled(bold(req.source), f" ({a.teacher}) vs ", bold(r['source']), f" ({r['teacher']}): "
                                     f"{r['classes']} classes, {r['questions']} questions"), highlight=False, soft_wrap=True)
            if r["questions_detail"]:
                table = Table("question", "argmax agreement", "mean JS (bits)", "distance corr.")
                table.columns[0].no_wrap, table.columns[0].overflow, table.columns[0].max_width = True, "ellipsis", 60
                rows = r["questions_detail"] if req.top is None else sorted(r["questions_detail"], key=lambda q: q["mean_js"])[-req.top:]
                for q in rows:
                    table.add_row(texts.get(q["id"], q["id"])[:60], _fmt(q["argmax_agreement"]), _fmt(q["mean_js"]),
                                  _fmt(q["distance_correlation"]))
                table.add_row(bold("overall"), _fmt(o.get("argmax_agreement")), _fmt(o.get("mean_js")), _fmt(o["distance_correlation"]))
                req.console.print(table)
            else:
                req.console.print(f"  class-distance correlation {_fmt(o['distance_correlation'])}")
    return {"source": str(req.source), "teacher": a.teacher, "comparisons": results}
