"""targets.h5, format version 2 (version 1 files are read too): what a teacher answered.

Kinds and the shape of ``probs`` (C classes, Q questions, M options, N images):
- ``class_mcq``    C x Q x M, each row a distribution over the options (LaViD)
- ``class_yesno``  C x Q, p(yes) per class (MaKD questions answered by a language-only model)
- ``image_yesno``  N x Q, p(yes) per image (MaKD with a multimodal teacher)
- ``image_clip``   N x C, a distribution over class descriptions per image (LEAD)
- ``class_vector`` C x D, any per-class code (word embeddings, random codes): regressed with MSE

``logits`` has the shape of ``probs`` (raw teacher scores before normalisation). Per-image kinds add
``images`` (sample ids) and ``labels``; ``image_clip`` may add ``entropy`` (N, the normalised entropy
of each row, LEAD's H) and, from version 2, ``text_embeddings`` (C x D, the L2-normalised CLIP
embedding of each class description: LEAD's student distribution is taken over them). Root attributes: format, format_version, kind, teacher,
questions_sha256, option_labels and a JSON ``meta``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from makd_cli.errors import MakdError
from makd_cli.fileio import atomic_write_bytes, require_file
from makd_cli.formats.h5read import FLOAT, INTEGER, STRING, Damaged, read_array
from makd_cli.jsonio import dumps, loads

FORMAT = "makd-targets"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 2 added the optional text_embeddings dataset; a version 1 file simply lacks it
PER_CLASS = ("class_mcq", "class_yesno", "class_vector")
PER_IMAGE = ("image_yesno", "image_clip")
KINDS = PER_CLASS + PER_IMAGE
_STR = h5py.string_dtype("utf-8")


@dataclass
class Targets:
    kind: str
    classes: list[str]
    question_ids: list[str]
    probs: np.ndarray
    logits: np.ndarray | None = None
    teacher: str = ""
    questions_sha256: str = ""
    option_labels: list[str] = field(default_factory=list)
    images: list[str] | None = None
    labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    entropy: np.ndarray | None = None  # optional, per-image kinds: H(row) / log(C) in [0, 1] (LEAD)
    text_embeddings: np.ndarray | None = None  # optional, image_clip: C x D description embeddings (version 2)

    def __post_init__(self) -> None:
        self.probs = np.asarray(self.probs, dtype=np.float32)
        if self.entropy is not None:
            self.entropy = np.asarray(self.entropy, dtype=np.float32)
        if self.text_embeddings is not None:
            self.text_embeddings = np.asarray(self.text_embeddings, dtype=np.float32)
        if self.logits is not None:
            self.logits = np.asarray(self.logits, dtype=np.float32)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
        self.validate()

    @property
    def per_image(self) -> bool:
        return self.kind in PER_IMAGE

    @property
    def num_outputs(self) -> int:
        """Width of one target row flattened: what a student head must predict."""
        return int(np.prod(self.probs.shape[1:]))

    def validate(self, where: str = "targets") -> None:
        C, Q = len(self.classes), len(self.question_ids)
        if self.kind not in KINDS:
            raise MakdError(f"{where}: unknown targets kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if C == 0:
            raise MakdError(f"{where}: no classes")
        shape = self.probs.shape
        if self.kind == "class_mcq":
            ok = len(shape) == 3 and shape[:2] == (C, Q)
            want = f"{C} x {Q} x M"
        elif self.kind == "class_yesno":
            ok, want = shape == (C, Q), f"{C} x {Q}"
        elif self.kind == "class_vector":
            ok, want = len(shape) == 2 and shape[0] == C, f"{C} x D"
        elif self.kind == "image_yesno":
            ok, want = len(shape) == 2 and shape[1] == Q, f"N x {Q}"
        else:  # image_clip: one distribution over the C class descriptions
            ok, want = len(shape) == 2 and shape[1] == C, f"N x {C}"
        if not ok:
            raise MakdError(f"{where}: probs has shape {shape} but a {self.kind} file with {C} classes and {Q} questions needs {want}")
        if self.logits is not None and self.logits.shape != shape:
            raise MakdError(f"{where}: logits shape {self.logits.shape} differs from probs shape {shape}")
        if self.logits is not None and not np.all(np.isfinite(self.logits)):
            raise MakdError(f"{where}: logits holds NaN or infinite values")
        if not np.all(np.isfinite(self.probs)):
            raise MakdError(f"{where}: probs holds NaN or infinite values")
        if self.kind in ("class_mcq", "image_clip"):
            sums = self.probs.sum(axis=-1)
            # 5e-3: bfloat16 teachers' rows (LaViD's published targets) sum to 1 only within about 3e-3
            if not np.allclose(sums, 1.0, atol=5e-3):
                raise MakdError(f"{where}: {self.kind} rows must sum to 1 (found sums from {sums.min():.4f} to {sums.max():.4f})")
        if self.kind in ("class_yesno", "image_yesno") and (self.probs.min() < 0 or self.probs.max() > 1):
            raise MakdError(f"{where}: p(yes) must lie in [0, 1]")
        if self.kind == "class_mcq" and self.option_labels and len(self.option_labels) != shape[2]:
            raise MakdError(f"{where}: {len(self.option_labels)} option labels for {shape[2]} options")
        if self.per_image:
            if self.images is None or self.labels is None:
                raise MakdError(f"{where}: per-image targets need images and labels")
            if len(self.images) != shape[0] or len(self.labels) != shape[0]:
                raise MakdError(f"{where}: {shape[0]} rows but {len(self.images)} images and {len(self.labels)} labels")
            if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= C):
                raise MakdError(f"{where}: labels outside 0..{C - 1}")
        if self.entropy is not None:
            if not self.per_image or self.entropy.shape != (shape[0],):
                raise MakdError(f"{where}: entropy must be one value per image row ({shape[0]}), found shape {self.entropy.shape}")
            if not np.all(np.isfinite(self.entropy)) or (len(self.entropy) and (self.entropy.min() < -1e-4 or self.entropy.max() > 1 + 1e-4)):
                raise MakdError(f"{where}: entropy must lie in [0, 1] (normalised by log C)")
        if self.text_embeddings is not None:
            emb = self.text_embeddings
            if self.kind != "image_clip" or emb.ndim != 2 or emb.shape[0] != C:
                raise MakdError(f"{where}: text_embeddings must be one row per class ({C} x D) of an image_clip file, "
                                f"found shape {emb.shape} in a {self.kind} file")
            if not np.all(np.isfinite(emb)):
                raise MakdError(f"{where}: text_embeddings holds NaN or infinite values")
        if len(set(self.question_ids)) != Q:
            raise MakdError(f"{where}: question ids repeat")

    def check_classes(self, dataset_classes: list[str], where: str = "targets") -> None:
        """Targets must describe exactly the dataset's classes, in the same order."""
        if list(self.classes) != list(dataset_classes):
            missing = [c for c in dataset_classes if c not in self.classes]
            extra = [c for c in self.classes if c not in dataset_classes]
            if missing or extra:
                detail = f"missing {missing[:3]}" if missing else f"unknown {extra[:3]}"
                raise MakdError(
                    f"{where}: its {len(self.classes)} classes differ from the dataset's {len(dataset_classes)} "
                    f"({detail}); extract targets with the dataset's class list (`makd data classes`)"
                )
            raise MakdError(f"{where}: classes are in a different order from the dataset's; re-extract with the dataset's class list")


def write_targets(path: str | Path, t: Targets) -> None:
    t.validate(str(path))
    # HDF5 is built in memory and written with one plain write: h5py writing to a full disk raises in
    # its close path (and crashed the interpreter), while a plain write fails cleanly with ENOSPC.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", track_order=True) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["kind"] = t.kind
        f.attrs["teacher"] = t.teacher
        f.attrs["questions_sha256"] = t.questions_sha256
        f.attrs["option_labels"] = dumps(list(t.option_labels))
        f.attrs["meta"] = dumps(t.meta, sort_keys=True)
        f.create_dataset("classes", data=np.array(t.classes, dtype=object), dtype=_STR, track_times=False)
        f.create_dataset("question_ids", data=np.array(t.question_ids, dtype=object), dtype=_STR, track_times=False)
        f.create_dataset("probs", data=t.probs, track_times=False)
        if t.logits is not None:
            f.create_dataset("logits", data=t.logits, track_times=False)
        if t.per_image:
            f.create_dataset("images", data=np.array(t.images, dtype=object), dtype=_STR, track_times=False)
            f.create_dataset("labels", data=t.labels, track_times=False)
        if t.entropy is not None:
            f.create_dataset("entropy", data=t.entropy, track_times=False)
        if t.text_embeddings is not None:
            f.create_dataset("text_embeddings", data=t.text_embeddings, track_times=False)
    atomic_write_bytes(path, buffer.getvalue(), suffix=".h5")


def read_targets(path: str | Path) -> Targets:
    """Read and check a targets file; every decode, shape or attribute problem is one line naming it."""
    path = require_file(path, "targets file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise MakdError(f"{path} is not an HDF5 file; targets come from `makd extract`") from None
    try:
        with f:
            fields = _read_file(f, path)
    except (_Damaged, Damaged) as exc:
        raise MakdError(f"{path} is damaged: {exc}; re-run `makd extract`") from None
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:  # h5py's errors for a corrupt header, dataset or chunk
        raise MakdError(f"{path} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:80]}); re-run `makd extract`") from None
    try:
        return Targets(**fields)
    except MakdError as exc:
        raise MakdError(f"{path}: {exc}") from None


def _read_file(f, path: Path) -> dict:
    """The checked fields of an open targets file; MakdError for what is not a makd targets file."""
    if _attr(f, "format") != FORMAT:
        raise MakdError(f"{path} is not a makd targets file (format attribute {_attr(f, 'format')!r})")
    try:
        version = int(_attr(f, "format_version", -1))
    except (TypeError, ValueError, OverflowError):
        version = -1
    if version not in READABLE_VERSIONS:
        raise MakdError(f"{path} has targets format version {version}; this makd reads versions "
                        f"{', '.join(map(str, READABLE_VERSIONS))}. Re-run `makd extract`")
    for name in ("classes", "question_ids", "probs"):
        if f.get(name, getlink=True) is None:
            raise MakdError(f"{path} lacks the {name!r} dataset; the file is damaged or not from makd")
    kind = _attr(f, "kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise MakdError(f"{path} is damaged: its kind attribute is {kind!r}, not one of {', '.join(KINDS)}; re-run `makd extract`")
    return _read_fields(f, kind)


class _Damaged(Exception):
    pass


def _attr(f, name: str, default=None):
    value = f.attrs.get(name, default)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _json_attr(f, name: str, default: str, want: type):
    text = _attr(f, name, default)
    if not isinstance(text, str):
        raise _Damaged(f"its {name!r} attribute is not JSON text")
    try:
        value = loads(text, f"its {name!r} attribute")
    except MakdError as exc:
        raise _Damaged(str(exc)) from None
    if not isinstance(value, want):
        raise _Damaged(f"its {name!r} attribute is not a JSON {want.__name__}")
    return value


def _read_fields(f, kind: str) -> dict:
    """Every dataset and attribute of a targets file, each resolved inside the file, sized before it is
    read, of the right type and finite (``h5read``); shapes that must agree are checked before the big reads."""
    classes = _strings(f, "classes")
    question_ids = _strings(f, "question_ids")
    rows = len(classes) if kind in PER_CLASS else None
    width = {"class_yesno": len(question_ids), "image_yesno": len(question_ids), "image_clip": len(classes)}.get(kind)
    ndim = (3,) if kind == "class_mcq" else (2,)
    probs = read_array(f, "probs", FLOAT, ndim=ndim, shape=(rows, width if kind != "class_mcq" else len(question_ids)))
    present = lambda name: f.get(name, getlink=True) is not None  # noqa: E731 - a link out is refused by read_array
    n = probs.shape[0]
    return dict(
        kind=kind,
        classes=classes,
        question_ids=question_ids,
        probs=probs,
        logits=read_array(f, "logits", FLOAT, shape=probs.shape) if present("logits") else None,
        teacher=str(_attr(f, "teacher", "")),
        questions_sha256=str(_attr(f, "questions_sha256", "")),
        option_labels=_json_attr(f, "option_labels", "[]", list),
        images=_strings(f, "images") if present("images") else None,
        labels=read_array(f, "labels", INTEGER, ndim=(1,), shape=(n,)) if present("labels") else None,
        meta=_json_attr(f, "meta", "{}", dict),
        entropy=read_array(f, "entropy", FLOAT, ndim=(1,), shape=(n,)) if present("entropy") else None,
        text_embeddings=read_array(f, "text_embeddings", FLOAT, ndim=(2,)) if present("text_embeddings") else None,
    )


def _strings(f, name: str) -> list[str]:
    data = read_array(f, name, STRING, ndim=(1,))
    try:
        return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in data]
    except UnicodeDecodeError:
        raise _Damaged(f"{name!r} holds strings that are not UTF-8") from None


def check_questions_file(t: Targets, questions_path: str | Path, where: str = "targets") -> None:
    """A questions file given beside targets must be the one they answer: the same file (its sha256 is
    in the targets) or at least one holding every question id of the targets."""
    from makd_cli.fileio import sha256_file
    from makd_cli.formats.questions import read_questions

    questions_path = Path(questions_path)
    questions = read_questions(questions_path)
    if t.questions_sha256 and sha256_file(questions_path) == t.questions_sha256:
        return
    ids = {q.id for q in questions}
    missing = [i for i in t.question_ids if i not in ids]
    if missing:
        raise MakdError(f"{questions_path} is not the questions file of {where}: it lacks {len(missing)} of their "
                        f"{len(t.question_ids)} questions (first {missing[0]}); pass the file the targets were extracted from")
