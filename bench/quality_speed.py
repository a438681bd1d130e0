"""`makd inspect --quality` on 1000 classes x 100 questions: the old figures (full SVD and scipy's
pdist, twelve SVDs and six distance matrices per report, BLAS threads as OpenBLAS chooses) against
the current ones (singular values from the smaller Gram matrix, distances from one matrix product
with exact recomputation of close pairs, one BLAS thread), in one process, same data, same seed
(issue 19, item 15). The middle figure is the new arithmetic with the default BLAS threads.

    .venv/bin/python bench/quality_speed.py [--classes 1000] [--questions 100] [--options 5] [--repeat 2]

Prints one JSON line: seconds per report for each, the speed-up, and the largest difference
between the two reports' numbers (they must agree).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.spatial.distance import pdist

from makd_cli import quality
from makd_cli.formats.targets import Targets


def old_singular_values(X):
    return np.linalg.svd(np.asarray(X, dtype=np.float64), compute_uv=False)


def old_pairwise_distances(X, exact_below):
    return pdist(X) if len(X) > 1 else np.zeros(0)


def numbers(report: dict) -> np.ndarray:
    flat = [v for k in quality.OVERALL_KEYS for v in (report["overall"]["teacher"][k], report["overall"]["random"][k])]
    flat += [q[k] for q in report["questions"] for k in ("answer_entropy", "mutual_information", "spread")]
    flat += [c["distance"] for c in report["classes"]]
    return np.asarray(flat, dtype=np.float64)


def timed(repeat: int, t: Targets, report_fn) -> tuple[float, dict]:
    best, report = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = report_fn(t)
        best = min(best, time.perf_counter() - t0)
    return best, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--options", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    z = rng.standard_normal((args.classes, args.questions, args.options)) * 2
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    t = Targets("class_mcq", [f"c{i}" for i in range(args.classes)], [f"q{i}" for i in range(args.questions)], p, z)

    unlimited = lambda t: quality._quality_report(t, 0, 5, quality.INDISTINGUISHABLE_EPS, quality.LOW_ENTROPY_THRESHOLD)  # noqa: E731
    new_s, new = timed(args.repeat, t, quality.quality_report)  # as shipped: new figures, one BLAS thread
    algo_s, _ = timed(args.repeat, t, unlimited)  # new figures, BLAS threads as the library chooses
    current = quality.singular_values, quality.pairwise_distances
    quality.singular_values, quality.pairwise_distances = old_singular_values, old_pairwise_distances
    try:
        old_s, old = timed(args.repeat, t, unlimited)  # as before: SVD, pdist, default BLAS threads
    finally:
        quality.singular_values, quality.pairwise_distances = current
    diff = float(np.max(np.abs(numbers(old) - numbers(new)) / np.maximum(1.0, np.abs(numbers(old)))))
    print(json.dumps({"classes": args.classes, "questions": args.questions, "options": args.options,
                      "old_s": round(old_s, 2), "new_figures_default_threads_s": round(algo_s, 2), "new_s": round(new_s, 2),
                      "speedup": round(old_s / new_s, 1),
                      "max_relative_difference": diff}))


if __name__ == "__main__":
    main()
