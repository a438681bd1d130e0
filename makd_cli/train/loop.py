"""The ``classify`` training task: CE on the class logits plus one loss term per ``--method`` name.

It owns every method of the METHODS registry (lavid, makd, kd, dkd, mlkd, ... and their combinations).
The shared setup (run folder, processes, optimizer, resume, checkpoints, the epoch loop) is
``train/task.py``'s; this file builds the data, the student and its head, and one step's loss.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from makd_cli.data import load_dataset
from makd_cli.data.layout import require_classes
from makd_cli.data.hold_out import apply_hold_out
from makd_cli.data.splits import carve_train_val
from makd_cli.data.transforms import (TorchSplit, WeakStrong, default_image_size, eval_transform, strong_train_transform,
                                      train_transform, unreadable_note)
from makd_cli.errors import MakdError
from makd_cli.evaluate.metrics import topk_accuracy
from makd_cli.evaluate.predict import predict
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.input_hashes import dataset_record
from makd_cli.methods import Batch, MethodContext, build_terms
from makd_cli.methods.base import TargetTable, ce_weight_of, fine_target_rows
from makd_cli.students import build_student, student_from_checkpoint
from makd_cli.train.config import TrainConfig
from makd_cli.train.distributed import per_rank_batch
from makd_cli.train.engine import Objective, seed_everything
from makd_cli.train.task import Built, Env, TrainingTask, load_targets
from makd_cli.train.tasks import register_task


def _teacher(cfg: TrainConfig, device):
    if not cfg.teacher_ckpt:
        return None
    teacher = student_from_checkpoint(load_checkpoint(cfg.teacher_ckpt)).to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@register_task("classify", help="CE on the class logits plus each --method term (ce, lavid, makd, kd, ...)")
class Classify(TrainingTask):
    """CE + the METHODS terms on one student with a head of C + extra outputs."""

    holds_out_classes = True  # --hold-out-classes: those classes never train (makd eval --unseen)

    def build(self, cfg: TrainConfig, env: Env) -> Built:
        return _build(cfg, env)  # defined below: the data, the student and its head, one step's loss

    def check_resume(self, ckpt: dict, cfg: TrainConfig, built: Built, where: str) -> None:
        for term, saved in zip(built.state["terms"], ckpt["head"].get("terms", [])):  # the same --method: its terms in order
            term.check_resume(saved, where)

    def summary(self, cfg: TrainConfig, run, built: Built) -> dict:
        train_data = built.objective.data
        skipped = train_data.unreadable.report()
        if skipped and run.info.main:  # a warning, on stderr like extraction's: the results stay machine-readable
            print(f"makd: {run.out}: {unreadable_note(skipped)}", file=sys.stderr)
        return {**super().summary(cfg, run, built), "unreadable_images": skipped}


def _build(cfg: TrainConfig, env: Env) -> Built:
    device, info, workers = env.device, env.info, env.workers

    ds = load_dataset(cfg.data, seed=cfg.seed)
    ds, hold_out = apply_hold_out(cfg, ds)  # held-out classes leave training and validation (unseen-class eval)
    require_classes(ds, cfg.data)  # a one-class classifier reports 100% and learns nothing
    targets = load_targets(cfg, ds.classes, ds.train, ds.fine_classes)
    train_split, val_split = carve_train_val(
        ds.train, len(ds.classes), cfg.val_fraction, cfg.per_class, cfg.train_fraction, cfg.seed
    )
    size = cfg.image_size or default_image_size(ds.native_size)
    fine_rows = None if targets is None else fine_target_rows(targets, ds.classes, ds.fine_classes)
    ctx = MethodContext(
        num_classes=len(ds.classes), targets=targets, train_ids=train_split.ids, train_labels=train_split.labels,
        weight=cfg.aux_weight, epochs=cfg.epochs,
        target_rows=None if fine_rows is None else fine_rows[train_split.fine_labels],
        options=cfg.options_of_kind("method"),
    )
    terms = build_terms(cfg.method, ctx)
    if targets is not None and not any(t.target_kinds for t in terms) and not (targets.kind == "image_clip" and any(t.needs_teacher for t in terms)):
        raise MakdError(f"--method {cfg.method} does not use --targets; drop --targets or pick a method that uses them (lavid, makd)")
    offsets = np.cumsum([0] + [t.extra_dim for t in terms]).tolist()
    extra_dim = offsets[-1]

    seed_everything(cfg.seed)  # the initial weights depend on the seed alone
    model = build_student(cfg.student, len(ds.classes), extra_dim, size, cfg.pretrained, init=cfg.init).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    terms = [t.to(device) for t in terms]
    teacher = _teacher(cfg, device)
    logit_table = None
    if any(t.needs_teacher for t in terms) and teacher is None:
        if targets is not None and targets.kind == "image_clip" and targets.logits is not None:
            # The MLLM's zero-shot class scores as the KD teacher (makd.txt Table 4).
            logit_table = TargetTable(SimpleNamespace(per_image=True, probs=targets.logits, images=targets.images), ctx).to(device)
        else:
            raise MakdError(f"--method {cfg.method} distils a teacher: pass --teacher-ckpt (a checkpoint from `makd train`) "
                            "or --targets with per-image class scores (`makd extract --mllm ... --kind zero_shot`)")
    step_model = model
    if info.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if device.type == "cuda" else None)
    step_model = torch.compile(step_model) if cfg.compile else step_model
    batch_size = per_rank_batch(cfg.batch_size, info)

    head = {
        "method": cfg.method, "extra_dim": extra_dim, "terms": [t.head_info() for t in terms],
        "slices": {t.name: [offsets[i], offsets[i + 1]] for i, t in enumerate(terms) if t.extra_dim},
    }
    base = {
        "arch": cfg.student, "num_classes": len(ds.classes), "classes": list(ds.classes), "image_size": size,
        "native_size": ds.native_size, "dataset": dataset_record(ds),
        "split": {"train": len(train_split), "val": len(val_split) if val_split else 0, "test": len(ds.test)},
        **({"hold_out": hold_out} if hold_out else {}),
    }
    tr_tf, ev_tf = train_transform(size, ds.native_size), eval_transform(size, ds.native_size, cfg.test_resize)
    two_views = any(t.views == 2 for t in terms)  # MLKD: each item is a weak and a strong view, stacked
    if two_views:
        tr_tf = WeakStrong(tr_tf, strong_train_transform(size, ds.native_size))
    ce_weight = ce_weight_of(terms)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" and cfg.amp else nullcontext
    train_data = TorchSplit(train_split, tr_tf, what="train")  # unreadable images: skipped, counted, bounded

    def step(batch, epoch):
        train_data.unreadable.check()
        images, labels, indices = batch
        views = list(images.unbind(1)) if two_views else [images]
        if device.type == "cuda" and cfg.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with autocast():
            # One forward per view, as the reference (each view gets its own batch-norm statistics).
            outputs = [step_model(v) for v in views]
            logits, extra = outputs[0]
            batch = Batch(views[0], labels, indices, epoch)
            teacher_logits = [None] * len(views)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = [teacher(v)[0].float() for v in views]
            elif logit_table is not None:  # per-image scores: the same for both views
                teacher_logits = [logit_table.lookup(batch)] * len(views)
            batch.teacher_logits = teacher_logits[0]
            if two_views:
                batch.strong_logits, batch.strong_teacher_logits = outputs[1][0].float(), teacher_logits[1]
            ce = ce_weight * sum(F.cross_entropy(out[0].float(), labels) for out in outputs)
            parts = [t.loss(logits.float(), extra[:, offsets[i]:offsets[i + 1]].float(), batch) for i, t in enumerate(terms)]
            loss = ce + sum(parts)
        return loss, {"ce": ce.item(), **{t.name: p.item() for t, p in zip(terms, parts)}}

    def validate() -> dict:
        if val_split is None:
            return {}
        pv = predict(model, val_split, ev_tf, batch_size=max(64, cfg.batch_size), workers=workers, device=str(device),
                     what="validation")
        return {"val_top1": topk_accuracy(pv["logits"], pv["labels"], 1)}

    def evaluate_test() -> dict:
        # Only the papers' protocols call this (--select-by test-loss / test-acc): the class head's CE and top-1.
        pt = predict(model, ds.test, ev_tf, batch_size=max(64, cfg.batch_size), workers=workers, device=str(device), what="test")
        ce = F.cross_entropy(torch.from_numpy(pt["logits"]), torch.from_numpy(np.asarray(pt["labels"])).long()).item()
        return {"test_loss": ce, "test_top1": topk_accuracy(pt["logits"], pt["labels"], 1)}

    objective = Objective(model=model, data=train_data, train_modules=[model], step=step, validate=validate, evaluate_test=evaluate_test,
                          parts=("ce", *(t.name for t in terms)), batch_size=batch_size,
                          part_weights={"ce": ce_weight, **{t.name: t.weight for t in terms}},
                          drop_last=len(train_split) > cfg.batch_size)
    return Built(objective, list(model.parameters()), base, head, targets, state={"terms": terms})
