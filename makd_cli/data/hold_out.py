"""Held-out classes (``makd train --hold-out-classes N[:SEED]|FILE``) for unseen-class evaluation.

The held-out classes leave training and validation entirely: their training images are dropped
before the train/val carving, so neither the class head nor the extra outputs ever see one. The test
split keeps them: ``makd eval --unseen`` scores their test images against their teacher signatures
through the extra outputs (``evaluate/unseen.py``).

The student's class head keeps all C rows (the held-out classes' rows simply never receive a
positive example), so a hold-out run has the same head shape, class list and checkpoint layout as
any other run; unseen-class scoring reads the extra outputs only, never those rows.

``N`` chooses N classes with a generator seeded by ``SEED`` (default 0), not by the run's ``--seed``:
every seed of a run and every control beside it hold out the same classes, so the seeds measure
training noise alone, as in every other column. ``FILE`` is a class list, one name per line (a
published zero-shot split, for example); ``#`` starts a comment.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from makd_cli.data.base import DatasetSplits, Split
from makd_cli.errors import MakdError

DEFAULT_HOLD_OUT_SEED = 0


def resolve_hold_out(spec: str, classes: list[str]) -> dict:
    """``{"spec", "seed", "classes"}``: the held-out class names (in the dataset's order) for ``spec``."""
    spec = str(spec).strip()
    count, sep, seed_text = spec.partition(":")
    if count.isdigit() and (not sep or seed_text.strip().lstrip("-").isdigit()):
        n, seed = int(count), int(seed_text) if sep else DEFAULT_HOLD_OUT_SEED
        if not 1 <= n <= len(classes) - 2:
            raise MakdError(f"--hold-out-classes {spec}: hold out 1 to {len(classes) - 2} of the {len(classes)} classes "
                            "(training needs at least two seen classes)")
        chosen = np.random.default_rng(seed).choice(len(classes), size=n, replace=False)
        return {"spec": spec, "seed": seed, "classes": [classes[i] for i in sorted(chosen.tolist())]}
    path = Path(spec)
    if not path.is_file():
        raise MakdError(f"--hold-out-classes {spec}: give a number of classes (N or N:SEED) or a file of class names, one a line")
    from makd_cli.fileio import read_text

    names = [line.split("#", 1)[0].strip() for line in read_text(path, "class list").splitlines()]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise MakdError(f"{path}: {len(unknown)} name(s) are not classes of the dataset (first: {unknown[0]!r}); "
                        "`makd data classes` lists them")
    if len(set(names)) != len(names):
        raise MakdError(f"{path}: a class is listed twice")
    if not 1 <= len(names) <= len(classes) - 2:
        raise MakdError(f"{path}: hold out 1 to {len(classes) - 2} of the {len(classes)} classes (it lists {len(names)})")
    held = set(names)
    return {"spec": spec, "seed": None, "classes": [c for c in classes if c in held]}


def without_classes(split: Split, classes: list[str], held: list[str]) -> Split:
    """``split`` with every image of the ``held`` classes removed."""
    drop = [classes.index(c) for c in held]
    return split.subset(np.flatnonzero(~np.isin(split.labels, drop)))


def apply_hold_out(cfg, ds: DatasetSplits) -> tuple[DatasetSplits, dict | None]:
    """``ds`` without the held-out classes' training images (a copy: a loader may share its splits) and
    the record for the checkpoint (``hold_out``); ``(ds, None)`` when ``cfg`` holds nothing out."""
    spec = getattr(cfg, "hold_out_classes", None)
    if not spec:
        return ds, None
    if cfg.select_by != "val":  # the test split holds the unseen classes: choosing an epoch on it would peek at them
        raise MakdError(f"--hold-out-classes chooses best.pt on the validation split of the seen classes; drop --select-by "
                        f"{cfg.select_by}, which reads the test split (and with it the held-out classes)")
    if cfg.control == "gaussian":
        raise MakdError("--hold-out-classes needs a signature per class; the gaussian control draws one code per training "
                        "image, so the held-out classes would have none: use random-codes or shuffled")
    record = resolve_hold_out(spec, list(ds.classes))
    return replace(ds, train=without_classes(ds.train, list(ds.classes), record["classes"])), record


def held_out_record(ckpt: dict) -> dict | None:
    """The checkpoint's ``hold_out`` record (``{"spec", "seed", "classes"}``), or None."""
    record = ckpt.get("hold_out")
    if not record:
        return None
    if not isinstance(record, dict) or not all(c in ckpt["classes"] for c in record.get("classes", [None])):
        raise MakdError("the checkpoint's hold_out record names classes it does not have; the checkpoint is damaged")
    return record
