"""``makd eval --unseen`` on checkpoints: the run's held-out classes scored through the student's extra
outputs against the teacher's class signatures (the scoring rules and the tables are ``evaluate/unseen.py``;
this module reads checkpoints and predictions, so it builds on ``evaluate/report.py``)."""

from __future__ import annotations

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.evaluate.unseen import (SIGNATURE_KINDS, class_signatures, signature_distances, signature_scores,
                                      unseen_metrics)
from makd_cli.formats.targets import Targets


def unseen_term(ckpt: dict, kind: str) -> tuple[str, str, tuple[int, int]]:
    """The method term whose extra outputs learnt the class signature: its name, declared output
    activation and slice (what the method declared, recorded in the checkpoint: ``term_facts``)."""
    from makd_cli.methods.base import term_facts

    slices = ckpt["head"].get("slices") or {}
    for info in ckpt["head"].get("terms") or []:
        name = info.get("method")
        facts = term_facts(info)
        if name in slices and facts.get("aspect_head") and kind in SIGNATURE_KINDS:
            lo, hi = slices[name]
            return name, facts.get("output", "identity"), (lo, hi)
    raise MakdError(f"--unseen scores the extra outputs a method learnt from class signatures ({', '.join(SIGNATURE_KINDS)} "
                    f"targets: lavid, makd); this run has {ckpt['config'].get('method')} with {kind} targets")


def training_signatures(ckpt: dict, targets_path: str | None) -> tuple[Targets, np.ndarray]:
    """The targets the run trained on (its --control rebuilt from its seed) and one signature per class."""
    from makd_cli.formats.targets import read_targets

    cfg = ckpt["config"]
    path = targets_path or cfg.get("targets")
    if not path:
        raise MakdError("--unseen needs the run's targets (it trained without --targets)")
    targets = read_targets(path)
    if list(targets.question_ids) != list(ckpt["head"].get("question_ids", [])):
        raise MakdError(f"{path}: its question ids differ from the ones the checkpoint was trained on; pass the training targets")
    targets.check_classes(list(ckpt["classes"]), where=str(path))
    if cfg.get("control"):
        from makd_cli.controls import apply_control

        if cfg["control"] == "gaussian":
            raise MakdError("--unseen needs a signature per class; the gaussian control has none")
        targets = apply_control(cfg["control"], targets, cfg.get("seed", 0))
    return targets, class_signatures(targets)


def unseen_for_checkpoint(path: str, data: str | None = None, targets_path: str | None = None, device: str = "cpu") -> dict | None:
    """The unseen-class figures of one checkpoint (None when it holds no classes out)."""
    from makd_cli.data.hold_out import held_out_record
    from makd_cli.data.transforms import eval_transform
    from makd_cli.evaluate.predict import predict
    from makd_cli.evaluate.report import cached_predictions, checkpoint_and_dataset
    from makd_cli.students import student_from_checkpoint

    ckpt, data, ds = checkpoint_and_dataset(path, data, "evaluate")
    record = held_out_record(ckpt)
    if record is None:
        return None
    targets, signatures = training_signatures(ckpt, targets_path)
    name, output, (lo, hi) = unseen_term(ckpt, targets.kind)

    def run_model() -> dict:
        model = student_from_checkpoint(ckpt).to(device)
        return predict(model, ds.test, eval_transform(ckpt["image_size"], ckpt.get("native_size")), 256, 0, device, what="test")

    pred = cached_predictions(path, data, ds.test, ckpt, "test", run_model)  # the one `makd eval` just wrote
    classes = list(ckpt["classes"])
    unseen = [classes.index(c) for c in record["classes"]]
    scores = signature_scores(pred["extra"][:, lo:hi], signatures, targets.kind, output)
    result = unseen_metrics(scores, pred["labels"], unseen)
    return {"method": name, "kind": targets.kind, "held_out": list(record["classes"]), "num_classes": len(classes),
            **result, "signature_distances": signature_distances(signatures, unseen).round(4).tolist()}


def add_unseen(results: list[dict], paths: list, data: str | None, targets_path: str | None, device: str) -> None:
    """``results[i]["unseen"]`` for each checkpoint that holds classes out (None for the others); one
    line when none of them does."""
    for p, r in zip(paths, results):
        r["unseen"] = unseen_for_checkpoint(str(p), data, targets_path, device)
    if not any(r["unseen"] for r in results):
        raise MakdError("--unseen: none of these runs holds classes out; train with `makd train --hold-out-classes N`")
