"""How much a teacher's targets tell the classes apart, next to random codes of the same shape.

Class signatures. Per-class kinds use the targets as they are; per-image kinds average the rows of
each class's images (classes with no image are left out and listed). Signatures form a cube
``S`` of shape C x Q x K: K = M options for ``class_mcq``, K = 1 (p(yes)) for yes/no kinds.
``class_vector`` (C x D) and ``image_clip`` (class-averaged C x C) have no questions: they are treated
as one block of width D (or C) and get only the per-class and overall figures.

Per question q (entropies in nats, divided by log M; yes/no use M = 2 and "yes" = p > 0.5):
- ``answer_entropy``: entropy of the histogram over classes of each class's answer (argmax option,
  or p(yes) > 0.5). 0 when every class gives the same answer.
- ``mean_entropy``: entropy of the class-averaged answer distribution (binary entropy of the mean
  p(yes)). High for a split question but also for one every class answers 50/50.
- ``mutual_information``: ``mean_entropy`` minus the mean over classes of each row's own entropy,
  i.e. I(class; answer) with uniform classes, normalised. 0 iff every class has the same row.
- ``spread``: RMS over classes of the Euclidean distance from a class's row to the mean row
  (the standard deviation of p(yes) for yes/no).
- ``groups``: number of distinct answers among the classes (how many groups it splits them into);
  ``pairs_split``: fraction of class pairs whose answers differ.
- ``low_entropy``: ``answer_entropy < LOW_ENTROPY_THRESHOLD`` (0.15). With M = 4 and 10 classes this
  flags questions all classes answer alike; with 100 classes also ones where a single class differs.

Overall (on the flattened C x (Q*K) signature matrix X, Euclidean distances between rows):
``min_distance``, ``mean_distance`` over class pairs; ``effective_rank`` = exp(entropy of the
singular values of X divided by their sum) and ``effective_rank_centered`` (same after subtracting
the column means, so a question every class answers alike adds nothing); ``indistinguishable_pairs``:
pairs closer than ``indistinguishable_eps * sqrt(Q)`` (an RMS difference per question below eps,
default 0.05). ``random`` holds the same figures for random class codes of the same shape
(:func:`makd_cli.controls.random_signature_array`), averaged over ``n_random`` seeded draws.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import squareform

from makd_cli.controls import QUESTION_KINDS, random_signature_array
from makd_cli.errors import MakdError
from makd_cli.formats.targets import Targets

LOW_ENTROPY_THRESHOLD = 0.15
INDISTINGUISHABLE_EPS = 0.05
OVERALL_KEYS = ("min_distance", "mean_distance", "effective_rank", "effective_rank_centered", "indistinguishable_pairs")


def class_signatures(targets: Targets) -> tuple[np.ndarray, np.ndarray]:
    """``(S, present)``: the C' x Q x K signature cube of the classes that have targets, and their indices."""
    t = targets
    probs = np.asarray(t.probs, dtype=np.float64)
    C = len(t.classes)
    if t.per_image:
        present = np.unique(t.labels)
        sums = np.zeros((C,) + probs.shape[1:])
        np.add.at(sums, t.labels, probs)
        counts = np.bincount(t.labels, minlength=C).astype(np.float64)
        probs = sums[present] / counts[present].reshape((-1,) + (1,) * (probs.ndim - 1))
    else:
        present = np.arange(C)
    if t.kind == "class_mcq":
        return probs, present
    if t.kind in ("class_yesno", "image_yesno"):
        return probs[:, :, None], present
    return probs[:, None, :], present  # class_vector, image_clip: one block


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.0, 1.0)
    return np.maximum(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1), 0.0)


def _rows(S: np.ndarray) -> np.ndarray:
    """Answer distributions per class and question: C x Q x M (yes/no expanded to [1-p, p])."""
    return np.concatenate([1.0 - S, S], axis=-1) if S.shape[-1] == 1 else S


def answers(S: np.ndarray) -> np.ndarray:
    """Hard answer per class and question (C x Q): argmax option, or 1 where p(yes) > 0.5."""
    return (S[..., 0] > 0.5).astype(np.int64) if S.shape[-1] == 1 else S.argmax(axis=-1)


def question_stats(S: np.ndarray) -> dict[str, np.ndarray]:
    """Per-question figures (arrays of length Q) for a signature cube; see the module docstring."""
    C, Q, _ = S.shape
    P = _rows(S)
    M = P.shape[-1]
    norm = math.log(M)
    A = answers(S)
    counts = np.stack([(A == m).sum(axis=0) for m in range(M)], axis=-1).astype(np.float64)  # Q x M
    hist = counts / C
    mean_rows = P.mean(axis=0)  # Q x M
    mean_h = _entropy(mean_rows)
    n_pairs = C * (C - 1) / 2
    pairs_split = 1.0 - (counts * (counts - 1) / 2).sum(axis=-1) / n_pairs if n_pairs else np.zeros(Q)
    return {
        "answer_entropy": _entropy(hist) / norm,
        "mean_entropy": mean_h / norm,
        "mutual_information": np.maximum(mean_h - _entropy(P).mean(axis=0), 0.0) / norm,
        "spread": np.sqrt(((P - mean_rows) ** 2).sum(axis=-1).mean(axis=0) / (2 if S.shape[-1] == 1 else 1)),
        "groups": np.array([len(np.unique(A[:, q])) for q in range(Q)]),
        "pairs_split": pairs_split,
    }


def singular_values(X: np.ndarray) -> np.ndarray:
    """Singular values of X from the eigenvalues of its smaller Gram matrix (X Xᵀ or Xᵀ X).

    A full SVD of a 1000 x 500 signature matrix took 2.7 s on 2 cores and the report needs twelve;
    the Gram route is a matrix product and a symmetric eigensolve (about 30x faster). Its error on
    tiny singular values barely moves the entropy of the normalised spectrum."""
    X = np.asarray(X, dtype=np.float64)
    G = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    return np.sqrt(np.clip(np.linalg.eigvalsh(G), 0.0, None))[::-1]


def effective_rank(X: np.ndarray) -> float:
    """exp of the Shannon entropy of the singular values normalised to sum 1 (0 for a zero matrix)."""
    s = singular_values(X)
    if s.sum() <= 1e-12:
        return 0.0
    p = s / s.sum()
    return float(np.exp(_entropy(p)))


def pairwise_distances(X: np.ndarray, exact_below: float) -> np.ndarray:
    """Condensed Euclidean distances between the rows of X (the order of ``scipy.spatial.distance.pdist``).

    Through the Gram matrix (one matrix product, 5x faster than pdist on 1000 x 500), then every pair
    closer than ``exact_below`` is recomputed from the differences, so small distances (the minimum,
    indistinguishable pairs, identical rows at exactly 0) are as exact as pdist's."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if n < 2:
        return np.zeros(0)
    sq = np.einsum("ij,ij->i", X, X)
    i, j = np.triu_indices(n, 1)
    d2 = np.maximum((sq[:, None] + sq[None, :] - 2.0 * (X @ X.T))[i, j], 0.0)
    near = np.flatnonzero(d2 < exact_below ** 2 + 1e-9 * (1.0 + sq.max()))
    for lo in range(0, len(near), 8192):  # bounded memory when many rows coincide
        k = near[lo:lo + 8192]
        diff = X[i[k]] - X[j[k]]
        d2[k] = np.einsum("ij,ij->i", diff, diff)
    return np.sqrt(d2)


def overall_figures(S: np.ndarray, eps: float = INDISTINGUISHABLE_EPS, d: np.ndarray | None = None) -> dict:
    """Distances, effective ranks and indistinguishable pairs for a C x Q x K signature cube
    (``d``: its condensed pairwise distances, when already computed)."""
    X = S.reshape(S.shape[0], -1)
    threshold = eps * math.sqrt(S.shape[1])
    if d is None:
        d = pairwise_distances(X, 2 * threshold)
    return {
        "min_distance": float(d.min()) if d.size else 0.0,
        "mean_distance": float(d.mean()) if d.size else 0.0,
        "effective_rank": effective_rank(X),
        "effective_rank_centered": effective_rank(X - X.mean(axis=0)),
        "indistinguishable_pairs": int((d < threshold).sum()),
    }


def _random_baseline(kind: str, S: np.ndarray, seed: int, n_random: int, eps: float) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    code_kind = {"image_yesno": "class_yesno", "image_clip": "class_mcq"}.get(kind, kind)
    draws = []
    for _ in range(n_random):
        R, _ = random_signature_array(code_kind, S.shape, rng, float(S.mean()), float(S.std()) or 1.0)
        draws.append(overall_figures(R, eps))
    mean = {k: float(np.mean([d[k] for d in draws])) for k in OVERALL_KEYS}
    std = {k: float(np.std([d[k] for d in draws])) for k in OVERALL_KEYS}
    return mean, std


def quality_report(targets: Targets, seed: int = 0, n_random: int = 5,
                   eps: float = INDISTINGUISHABLE_EPS, low_entropy_threshold: float = LOW_ENTROPY_THRESHOLD) -> dict:
    """A JSON-serialisable report on how well ``targets`` separate the classes (see module docstring).

    Keys: kind, teacher, num_classes, num_questions, num_options, classes_without_targets, seed,
    n_random, low_entropy_threshold, indistinguishable_eps, indistinguishable_threshold,
    questions (list of per-question dicts), classes (per-class nearest neighbour),
    overall {teacher, random, random_std}, summary.
    """
    from threadpoolctl import threadpool_limits

    # One BLAS thread: these products are small (1000 x 500), and OpenBLAS's spinning threads on a
    # busy 2-core machine made the report 11x slower (bench/quality_speed.py, bench/RESULTS.md).
    with threadpool_limits(limits=1, user_api="blas"):
        return _quality_report(targets, seed, n_random, eps, low_entropy_threshold)


def _quality_report(targets: Targets, seed: int, n_random: int, eps: float, low_entropy_threshold: float) -> dict:
    if n_random < 1:
        raise MakdError("n_random must be at least 1")
    S, present = class_signatures(targets)
    if len(present) < 2:
        raise MakdError(f"target quality needs at least 2 classes with targets, found {len(present)}")
    names = [targets.classes[i] for i in present]
    has_q = targets.kind in QUESTION_KINDS
    questions = []
    if has_q:
        stats = question_stats(S)
        for q, qid in enumerate(targets.question_ids):
            row = {"index": q, "id": qid}
            row.update({k: (int(v[q]) if k == "groups" else float(v[q])) for k, v in stats.items()})
            row["low_entropy"] = bool(row["answer_entropy"] < low_entropy_threshold)
            questions.append(row)
    d = pairwise_distances(S.reshape(len(S), -1), 2 * eps * math.sqrt(S.shape[1]))
    D = squareform(d)
    np.fill_diagonal(D, np.inf)
    classes = []
    for i, name in enumerate(names):
        j = int(np.argmin(D[i]))
        classes.append({"index": int(present[i]), "name": name, "nearest": names[j],
                        "nearest_index": int(present[j]), "distance": float(D[i, j])})
    teacher = overall_figures(S, eps, d)
    rand, rand_std = _random_baseline(targets.kind, S, seed, n_random, eps)
    n_low = sum(q["low_entropy"] for q in questions)
    closest = min(classes, key=lambda c: (c["distance"], c["index"]))
    return {
        "kind": targets.kind,
        "teacher": targets.teacher,
        "num_classes": len(targets.classes),
        "num_questions": S.shape[1] if has_q else 0,
        "num_options": int(S.shape[-1]) if targets.kind == "class_mcq" else (2 if has_q else 0),
        "classes_without_targets": [c for i, c in enumerate(targets.classes) if i not in set(present.tolist())],
        "seed": int(seed),
        "n_random": int(n_random),
        "low_entropy_threshold": float(low_entropy_threshold),
        "indistinguishable_eps": float(eps),
        "indistinguishable_threshold": float(eps * math.sqrt(S.shape[1])),
        "questions": questions,
        "classes": classes,
        "overall": {"teacher": teacher, "random": rand, "random_std": rand_std},
        "summary": {
            "low_entropy_questions": int(n_low),
            "low_entropy_fraction": float(n_low / len(questions)) if questions else 0.0,
            "closest_pair": [closest["name"], closest["nearest"]],
            "closest_distance": closest["distance"],
            "min_distance_ratio": float(teacher["min_distance"] / rand["min_distance"]) if rand["min_distance"] > 0 else None,
            "mean_distance_ratio": float(teacher["mean_distance"] / rand["mean_distance"]) if rand["mean_distance"] > 0 else None,
        },
    }


def format_quality_table(report: dict, max_questions: int = 20):
    """A rich renderable: teacher vs random overall, the closest classes and the least informative questions."""
    from rich.console import Group
    from rich.table import Table

    ov = report["overall"]
    overall = Table(title=f"Target quality: {report['teacher'] or report['kind']} vs random codes "
                          f"({report['n_random']} draws, seed {report['seed']})")
    overall.add_column("figure")
    overall.add_column("teacher", justify="right")
    overall.add_column("random (mean ± sd)", justify="right")
    for k in OVERALL_KEYS:
        fmt = "{:d}" if k == "indistinguishable_pairs" else "{:.4f}"
        t = fmt.format(ov["teacher"][k])
        overall.add_row(k.replace("_", " "), t, f"{ov['random'][k]:.4f} ± {ov['random_std'][k]:.4f}")
    parts = [overall]

    classes = Table(title="Closest classes in target space")
    for col in ("class", "nearest", "distance"):
        classes.add_column(col, justify="right" if col == "distance" else "left")
    for c in sorted(report["classes"], key=lambda c: (c["distance"], c["index"]))[:max_questions]:
        classes.add_row(c["name"], c["nearest"], f"{c['distance']:.4f}")
    parts.append(classes)

    if report["questions"]:
        s = report["summary"]
        qt = Table(title=f"Least informative questions ({s['low_entropy_questions']} of {len(report['questions'])} "
                         f"below answer entropy {report['low_entropy_threshold']})")
        for col in ("id", "answer H", "mean H", "MI", "spread", "groups", "pairs split", "low"):
            qt.add_column(col, justify="left" if col == "id" else "right")
        order = sorted(report["questions"], key=lambda q: (round(q["answer_entropy"], 9), round(q["mutual_information"], 9), q["index"]))
        for q in order[:max_questions]:
            qt.add_row(q["id"], f"{q['answer_entropy']:.3f}", f"{q['mean_entropy']:.3f}",
                       f"{q['mutual_information']:.3f}", f"{q['spread']:.3f}", str(q["groups"]),
                       f"{q['pairs_split']:.2f}", "yes" if q["low_entropy"] else "")
        parts.append(qt)
    return Group(*parts)
