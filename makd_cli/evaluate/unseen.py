"""``makd eval --unseen``: attribute-based recognition of classes held out of training.

A run trained with ``--hold-out-classes`` never saw the held-out classes. Its extra outputs (LaViD's
auxiliary head, MaKD's aspect outputs) learnt to predict the teacher's answers from the seen
classes' images; if those answers describe something the images show, the outputs on an unseen
class's image should still be closest to that class's signature. Each test image is scored against
every candidate class's signature by the log-likelihood of the signature under the answers the
student predicts (Lampert et al.'s direct attribute prediction, DAP, with soft attributes):

- ``class_mcq`` (C x Q x M): ``sum_q sum_m s[c,q,m] log p[q,m]``, ``p[q]`` the softmax of question
  q's M outputs. Because each signature row sums to 1, the ranking of the classes equals that of
  the expected output ``sum s[c,q,m] o[q,m]``: no clipping, and no class is favoured for answering
  more sharply.
- yes/no (``class_yesno``; ``image_yesno`` via class profiles): the Bernoulli log-likelihood
  ``sum_q s[c,q] log p[q] + (1 - s[c,q]) log(1 - p[q])`` with ``p[q]`` the student's p(yes). How the
  outputs become p(yes) follows the loss that trained them: ``makd`` (BCE / KL on logits) reads
  ``sigmoid(output)``; ``lavid`` (MSE on probabilities) reads the output itself, clipped to
  ``[LAVID_CLIP, 1 - LAVID_CLIP]``.
- Per-image targets (``image_yesno``) give each class a profile: the mean of its images' rows.

Two protocols (Xian et al., "Zero-Shot Learning: the Good, the Bad and the Ugly"), each the mean of
the per-class top-1 accuracies:

- unseen top-1: test images of held-out classes, candidates the held-out classes only;
- generalized (GZSL): every test image, candidates all C classes, each scored the same way by its
  signature (the class head is not used: one scoring rule for seen and unseen classes); accuracy on
  the seen and on the unseen classes, and their harmonic mean H = 2 s u / (s + u).

Chance: 100 / U for unseen top-1, 100 / C for each GZSL figure. A control (random codes, shuffled
rows) is scored with the very targets it trained on, rebuilt from the run's ``--control`` and seed.
"""

from __future__ import annotations

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.formats.targets import Targets

LAVID_CLIP = 0.01  # LaViD's regressed p(yes) may leave [0, 1]; clipped so a log-likelihood stays finite
# The target kinds that are class signatures (an attribute vector per class, or per image averaged per class):
# a method whose aspect head learnt one of these (``MethodTerm.aspect_head``, its ``target_kinds``) is scored.
SIGNATURE_KINDS = ("class_mcq", "class_yesno", "image_yesno")
UNSEEN_COLUMNS = (("unseen_top1", "unseen top-1"), ("gzsl_seen", "GZSL seen"), ("gzsl_unseen", "GZSL unseen"), ("gzsl_h", "GZSL H"))
# The eval table's columns of a held-out run, averaged over seeds like every metric (chance is the same for each seed).
UNSEEN_METRICS = tuple(k for k, _ in UNSEEN_COLUMNS) + ("chance_unseen_top1", "chance_gzsl")


# ------------------------------------------------------------------------------------ scoring rules
def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def mcq_log_likelihood(outputs: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """(N, K): log-likelihood of each of K signatures (K x Q x M answer distributions) under the
    answer distributions the N rows of ``outputs`` (N x Q*M, softmax per question) predict."""
    signatures = np.asarray(signatures, dtype=np.float64)
    K, Q, M = signatures.shape
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.shape[-1] != Q * M and outputs.shape[1:] != (Q, M):
        raise MakdError(f"the student's extra outputs have width {outputs.shape[-1]}, the signatures {Q} x {M}")
    logp = log_softmax(outputs.reshape(len(outputs), Q, M), axis=-1)
    return np.einsum("nqm,kqm->nk", logp, signatures)


def yesno_log_likelihood(p_yes: np.ndarray, signatures: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(N, K): Bernoulli log-likelihood of each of K signatures (K x Q p(yes)) under the student's
    per-image p(yes) (N x Q)."""
    p = np.clip(np.asarray(p_yes, dtype=np.float64), eps, 1 - eps)
    s = np.asarray(signatures, dtype=np.float64)
    if p.shape[1] != s.shape[1]:
        raise MakdError(f"the student answers {p.shape[1]} questions, the signatures {s.shape[1]}")
    return np.log(p) @ s.T + np.log1p(-p) @ (1 - s).T


def yes_probabilities(outputs: np.ndarray, output: str) -> np.ndarray:
    """The student's p(yes) per question, read as its loss trained the outputs (module doc): through the
    sigmoid the method declares (``output == "sigmoid"``: MaKD's BCE logits), else the regressed
    probabilities themselves, clipped (LaViD's MSE)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if output == "sigmoid":
        return 1 / (1 + np.exp(-outputs))
    return np.clip(outputs, LAVID_CLIP, 1 - LAVID_CLIP)


def class_signatures(targets: Targets) -> np.ndarray:
    """One signature per class: the per-class rows, or the mean row of each class's images."""
    if not targets.per_image:
        return np.asarray(targets.probs, dtype=np.float64)
    C = len(targets.classes)
    rows = np.asarray(targets.probs, dtype=np.float64)
    out = np.empty((C,) + rows.shape[1:])
    for c in range(C):
        mine = targets.labels == c
        if not mine.any():
            raise MakdError(f"the per-image targets hold no image of class {targets.classes[c]!r}, so it has no profile; "
                            "extract them for every class's training images")
        out[c] = rows[mine].mean(axis=0)
    return out


def signature_scores(extra: np.ndarray, signatures: np.ndarray, kind: str, output: str) -> np.ndarray:
    """(N, C) log-likelihood of every class's signature for each image's extra outputs (``output``: the
    method's declared output activation)."""
    if kind == "class_mcq":
        return mcq_log_likelihood(extra, signatures)
    return yesno_log_likelihood(yes_probabilities(extra, output), signatures)


# ------------------------------------------------------------------------------------ protocols
def mean_class_accuracy(predicted: np.ndarray, labels: np.ndarray, classes) -> float:
    """Mean over ``classes`` (those with test images) of the share of their images predicted right, in %."""
    accs = [float(np.mean(predicted[labels == c] == c)) for c in classes if np.any(labels == c)]
    if not accs:
        raise MakdError("no test image of the held-out classes was evaluated")
    return 100.0 * float(np.mean(accs))


def harmonic_mean(seen: float, unseen: float) -> float:
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def unseen_metrics(scores: np.ndarray, labels: np.ndarray, unseen: list[int]) -> dict:
    """Unseen top-1 and GZSL seen / unseen / H (module doc) from (N, C) ``scores`` over all classes,
    with chance beside them, and the unseen-only confusion (rows: true class, columns: predicted)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    C = scores.shape[1]
    unseen = sorted(int(u) for u in unseen)
    seen = [c for c in range(C) if c not in unseen]
    mask = np.isin(labels, unseen)
    zsl_pred = np.asarray(unseen)[scores[mask][:, unseen].argmax(axis=1)]
    gzsl_pred = scores.argmax(axis=1)
    gzsl_seen = mean_class_accuracy(gzsl_pred, labels, seen) if np.isin(labels, seen).any() else float("nan")
    gzsl_unseen = mean_class_accuracy(gzsl_pred, labels, unseen)
    confusion = np.zeros((len(unseen), len(unseen)), dtype=np.int64)
    pos = {c: i for i, c in enumerate(unseen)}
    for t, p in zip(labels[mask], zsl_pred):
        confusion[pos[int(t)], pos[int(p)]] += 1
    return {
        "unseen_top1": mean_class_accuracy(zsl_pred, labels[mask], unseen),
        "gzsl_seen": gzsl_seen, "gzsl_unseen": gzsl_unseen, "gzsl_h": harmonic_mean(gzsl_seen, gzsl_unseen),
        "chance_unseen_top1": 100.0 / len(unseen), "chance_gzsl": 100.0 / C,
        "unseen_confusion": confusion.tolist(),
    }


def signature_distances(signatures: np.ndarray, rows: list[int]) -> np.ndarray:
    """Euclidean distances between the flattened signatures of ``rows``, divided by sqrt(entries):
    the root-mean-square difference of two classes' answers (0: the teacher cannot tell them apart)."""
    flat = np.asarray(signatures, dtype=np.float64).reshape(len(signatures), -1)[rows]
    diff = flat[:, None, :] - flat[None, :, :]
    return np.sqrt((diff ** 2).mean(axis=-1))


# ------------------------------------------------------------------------------------ a checkpoint
# ------------------------------------------------------------------------------------ tables
HEAD_NOTE = ("The top-1 of a held-out run in the accuracy table counts the held-out classes' test images, which its class head "
             "never trained on.")

def unseen_rows(table) -> "object":
    """The rows of an eval table that carry unseen-class figures."""
    return table[table["unseen_top1"].notna()] if "unseen_top1" in table else table.iloc[0:0]


def unseen_cell(r, name: str) -> str:
    from makd_cli.evaluate.protocols import mean_std_cell

    return mean_std_cell(r, name)


def unseen_markdown(table) -> str:
    """The held-out runs of an eval table: unseen top-1 and GZSL seen / unseen / H (mean ± std over
    seeds), each beside its chance level."""
    rows = unseen_rows(table)
    if rows.empty:
        return ""
    keys = ["method", "control"] + list(table.attrs.get("differ", []))
    head = keys + ["runs", "unseen top-1", "chance", "GZSL seen", "GZSL unseen", "GZSL H", "chance (GZSL)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        lines.append("| " + " | ".join([str(r[k]) for k in keys] + [str(int(r["runs"])), unseen_cell(r, "unseen_top1"),
                                        f"{r['chance_unseen_top1']:.2f}", unseen_cell(r, "gzsl_seen"), unseen_cell(r, "gzsl_unseen"),
                                        unseen_cell(r, "gzsl_h"), f"{r['chance_gzsl']:.2f}"]) + " |")
    held = table.attrs.get("held_out") or []
    lines += ["", f"Held out: {'; '.join(held)}." if held else "", "Unseen classes (`makd eval --unseen`, docs/unseen.md): mean per-class top-1 (%), mean ± std over seeds. "
              "Unseen top-1: held-out classes' test images, held-out candidates only; GZSL: all test images, all classes as "
              "candidates, scored by their signatures; H: harmonic mean of GZSL seen and unseen. " + HEAD_NOTE]
    return "\n".join(lines)


def unseen_table_columns(r: dict) -> dict:
    """The columns ``comparison_table`` adds for one result (nothing for a run without held-out classes)."""
    u = r.get("unseen")
    return {k: u[k] for k in UNSEEN_METRICS} if u else {}


def held_out_sets(results: list[dict]) -> list[str]:
    """The distinct held-out class sets of the results, each as "a, b, c" (for the table's note)."""
    return list(dict.fromkeys(", ".join(r["unseen"]["held_out"]) for r in results if r.get("unseen")))


def print_unseen(table, console) -> None:
    """The held-out runs' figures as a terminal table (``makd eval --unseen``)."""
    from rich.table import Table

    rows = unseen_rows(table)
    if rows.empty:
        return
    held = table.attrs.get("held_out") or []
    t = Table(title="unseen classes: mean per-class top-1 (%)", caption=(f"held out: {'; '.join(held)}. " if held else "") + HEAD_NOTE)
    differ = list(table.attrs.get("differ", []))
    for col in ("method", "control", *differ, "runs", "unseen top-1", "chance", "GZSL seen", "GZSL unseen", "GZSL H", "chance (GZSL)"):
        t.add_column(col, justify="left" if col in ("method", "control", *differ) else "right")
    for _, r in rows.iterrows():
        t.add_row(str(r["method"]), str(r["control"]), *(str(r[k]) for k in differ), str(int(r["runs"])), unseen_cell(r, "unseen_top1"),
                  f"{r['chance_unseen_top1']:.2f}", unseen_cell(r, "gzsl_seen"), unseen_cell(r, "gzsl_unseen"), unseen_cell(r, "gzsl_h"),
                  f"{r['chance_gzsl']:.2f}")
    console.print(t)
