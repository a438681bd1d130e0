"""Pick the questions whose answers tell the classes apart.

Class signatures come from :func:`makd_cli.quality.class_signatures` (per-image targets are averaged
per class). The squared Euclidean distance between two signatures is a sum over questions, so a
set's pairwise distances are ``sqrt(sum over chosen q of d_q(a, b)^2)`` and greedy selection only
needs each question's pairwise squared distances.

Strategies (greedy, one question per step, deterministic):
- ``maximin``: add the question that makes the smallest pairwise class distance largest; ties
  broken by the larger mean pairwise distance, then the larger answer entropy, then the lower index.
- ``pairs``: add the question that leaves the fewest indistinguishable class pairs (distance below
  ``eps * sqrt(k)`` for k chosen questions, as in the quality report); ties broken by the
  ``maximin`` key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.distance import pdist

from makd_cli.errors import MakdError
from makd_cli.formats.questions import Question
from makd_cli.formats.targets import Targets
from makd_cli.registry import Registry
from makd_cli.quality import INDISTINGUISHABLE_EPS, QUESTION_KINDS, class_signatures, question_stats

STRATEGIES: Registry[str] = Registry("selection strategy", kind="strategy")
STRATEGIES.add("maximin", "maximin", "grow the smallest distance between class signatures")
STRATEGIES.add("pairs", "pairs", "fewest indistinguishable class pairs")
_CHUNK = 1 << 22  # pair x candidate cells scored at once
_ROUND = 10  # decimals: values equal to this precision count as ties


def pair_sq_distances(S: np.ndarray) -> np.ndarray:
    """P x Q: squared distance between every class pair (pdist order) on each question alone."""
    return np.stack([pdist(S[:, q, :], "sqeuclidean") for q in range(S.shape[1])], axis=1)


def _scores(cur: np.ndarray, Dq: np.ndarray, cand: list[int], threshold: float):
    """(min distance, mean distance, indistinguishable pairs) for each candidate added to ``cur``."""
    step = max(1, _CHUNK // max(1, len(cur)))
    mins, means, close = [], [], []
    for start in range(0, len(cand), step):
        d = np.sqrt(cur[:, None] + Dq[:, cand[start:start + step]])
        mins.append(d.min(axis=0))
        means.append(d.mean(axis=0))
        close.append((d < threshold).sum(axis=0))
    return np.concatenate(mins), np.concatenate(means), np.concatenate(close)


def select_questions(targets: Targets, q: int, strategy: str = "maximin", eps: float = INDISTINGUISHABLE_EPS) -> list[int]:
    """Indices of ``q`` questions of ``targets`` in the order chosen (see module docstring)."""
    if strategy not in STRATEGIES:
        raise MakdError(f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if targets.kind not in QUESTION_KINDS:
        raise MakdError(f"question selection needs question targets ({', '.join(QUESTION_KINDS)}), not {targets.kind}")
    Q = len(targets.question_ids)
    if q < 1 or q > Q:
        raise MakdError(f"cannot select {q} questions: the targets hold {Q}; choose between 1 and {Q}")
    S, present = class_signatures(targets)
    if len(present) < 2:
        raise MakdError(f"question selection needs at least 2 classes with targets, found {len(present)}")
    Dq = pair_sq_distances(S)
    entropy = question_stats(S)["answer_entropy"]
    cur = np.zeros(Dq.shape[0])
    chosen: list[int] = []
    remaining = list(range(Q))
    for k in range(1, q + 1):
        mins, means, close = _scores(cur, Dq, remaining, eps * math.sqrt(k))
        keys = []
        for i, j in enumerate(remaining):
            key = (round(float(mins[i]), _ROUND), round(float(means[i]), _ROUND), round(float(entropy[j]), _ROUND), -j)
            keys.append((-int(close[i]),) + key if strategy == "pairs" else key)
        best = remaining[max(range(len(remaining)), key=keys.__getitem__)]
        chosen.append(best)
        remaining.remove(best)
        cur = cur + Dq[:, best]
    return chosen


def subset_targets(targets: Targets, indices: list[int], questions_sha256: str = "") -> Targets:
    """Targets restricted to the questions ``indices``, in that order.

    The result no longer matches the original questions file: pass ``questions_sha256`` of the
    subset file written with :func:`subset_questions`. The meta records where the subset came from.
    """
    t = targets
    if t.kind not in QUESTION_KINDS:
        raise MakdError(f"cannot take a question subset of {t.kind} targets")
    idx = [int(i) for i in indices]
    Q = len(t.question_ids)
    if not idx:
        raise MakdError("no questions selected")
    bad = [i for i in idx if not 0 <= i < Q]
    if bad:
        raise MakdError(f"question index {bad[0]} is outside 0..{Q - 1}")
    if len(set(idx)) != len(idx):
        raise MakdError("the selected question indices repeat")
    meta = {**t.meta, "selected_from": {"questions_sha256": t.questions_sha256, "num_questions": Q, "indices": idx}}
    return Targets(
        kind=t.kind, classes=list(t.classes), question_ids=[t.question_ids[i] for i in idx],
        probs=t.probs[:, idx], logits=None if t.logits is None else t.logits[:, idx], teacher=t.teacher,
        questions_sha256=questions_sha256, option_labels=list(t.option_labels),
        images=None if t.images is None else list(t.images), labels=t.labels, meta=meta,
    )


def subset_questions(questions: list[Question], ids: list[str]) -> list[Question]:
    """The questions with ``ids``, in the order of ``ids``."""
    by_id = {q.id: q for q in questions}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise MakdError(f"question id {missing[0]} is not in the questions file ({len(missing)} missing); "
                        "use the questions file the targets were extracted from")
    if len(set(ids)) != len(ids):
        raise MakdError("the selected question ids repeat")
    return [by_id[i] for i in ids]


def write_question_subset(questions: list[Question], ids: list[str], out: Path) -> list[Question]:
    """Write the ``questions`` with ``ids`` (in that order) to ``out``; the one way makd prunes a
    questions file (``makd select`` and ``inspect --quality --drop-low-entropy``)."""
    from makd_cli.formats.questions import write_questions

    kept = subset_questions(questions, ids)
    write_questions(out, kept)
    return kept


def drop_low_entropy(report: dict, questions_path: Path, out: Path) -> dict:
    """Write ``questions_path`` without the questions a quality report marks low-entropy."""
    from makd_cli.formats.questions import read_questions

    low = {q["id"] for q in report["questions"] if q["low_entropy"]}
    questions = read_questions(questions_path)
    kept = write_question_subset(questions, [q.id for q in questions if q.id not in low], out)
    return {"kept": len(kept), "dropped": len(low), "output": str(out)}


@dataclass(frozen=True, kw_only=True)
class SelectConfig:
    """Everything ``makd select`` takes."""

    targets: Path  # targets over an over-generated question set
    questions: Path  # the questions those targets answer
    q: int  # how many questions to keep
    out_questions: Path
    out_targets: Path
    strategy: str = "maximin"


def run_select(cfg: SelectConfig) -> dict:
    """``makd select``: measure, pick ``q`` questions, write the subset questions and targets files."""
    from makd_cli.fileio import check_output_path, check_outputs_distinct, sha256_file, sha256_output
    from makd_cli.formats.questions import read_questions
    from makd_cli.formats.targets import read_targets, write_targets
    from makd_cli.quality import quality_report

    targets_path, questions_path, q, strategy = cfg.targets, cfg.questions, cfg.q, cfg.strategy
    out_questions, out_targets = cfg.out_questions, cfg.out_targets
    check_output_path(out_targets, "targets file")  # HDF5: `-` refused before any output is written
    check_outputs_distinct({"TARGETS": targets_path, "--questions": questions_path},
                           {"--out-questions": out_questions, "--out-targets": out_targets})
    targets = read_targets(targets_path)
    questions = read_questions(questions_path)
    if targets.questions_sha256 and targets.questions_sha256 != sha256_file(questions_path):
        raise MakdError(f"{targets_path} was extracted from another questions file than {questions_path}; pass the one it answers")
    picked = select_questions(targets, q, strategy)
    ids = [targets.question_ids[i] for i in picked]
    write_question_subset(questions, ids, out_questions)
    subset = subset_targets(targets, picked, sha256_output(out_questions))  # `-`: the text that went to standard output
    write_targets(out_targets, subset)

    def figures(t):
        r = quality_report(t)
        return {**r["summary"], "min_distance": r["overall"]["teacher"]["min_distance"],
                "indistinguishable_pairs": r["overall"]["teacher"]["indistinguishable_pairs"]}

    return {"available": len(targets.question_ids), "kept": q, "strategy": strategy, "selected_ids": ids,
            "before": figures(targets), "after": figures(subset)}
