"""The training loop: CE on classes plus the method's terms, checkpoints written atomically.

Every epoch reseeds all RNGs from (seed, epoch), so a run resumed from ``last.pt`` follows exactly
the path of an uninterrupted one.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from makd_cli.data import load_dataset
from makd_cli.data.splits import carve_train_val
from makd_cli.data.transforms import (TorchSplit, WeakStrong, default_image_size, eval_transform, strong_train_transform,
                                      train_transform, unreadable_note)
from makd_cli.errors import MakdError, resume_mismatch
from makd_cli.evaluate.metrics import topk_accuracy
from makd_cli.evaluate.predict import predict
from makd_cli.fileio import check_output_path, sha256_file
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.formats.targets import read_targets
from makd_cli.methods import Batch, MethodContext, build_terms
from makd_cli.methods.base import TargetTable, ce_weight_of, fine_target_rows
from makd_cli.students import build_student, student_from_checkpoint
from makd_cli.train.config import TrainConfig
from makd_cli.train.distributed import per_rank_batch, run_on_processes
from makd_cli.train.engine import Objective, Run, fit, seed_everything
from makd_cli.train.progress import TrainProgress


def default_workers(device: torch.device) -> int:
    # On a small CPU box the loader workers would steal cores from the model itself.
    cpus = os.cpu_count() or 1
    return 0 if device.type == "cpu" and cpus <= 4 else min(8, cpus - 1)


def _load_targets(cfg: TrainConfig, classes: list[str], train_split=None, fine_classes=()):
    if cfg.targets is None:
        if cfg.control:
            raise MakdError("--control needs --targets: a control has the shape of the real targets")
        return None
    targets = read_targets(cfg.targets)
    if fine_target_rows(targets, classes, list(fine_classes)) is None:  # else rows of the species (Waterbirds)
        targets.check_classes(classes, where=str(cfg.targets))
    if cfg.control:
        from makd_cli.controls import apply_control

        # MaKD's Gaussian control is per image: it needs the training images and their labels.
        extra = {"labels": train_split.labels, "images": train_split.ids} if cfg.control == "gaussian" else {}
        targets = apply_control(cfg.control, targets, cfg.seed, **extra)
    return targets


def _teacher(cfg: TrainConfig, device):
    if not cfg.teacher_ckpt:
        return None
    teacher = student_from_checkpoint(load_checkpoint(cfg.teacher_ckpt)).to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _check_resume(ckpt: dict, cfg: TrainConfig, out: Path) -> None:
    old = ckpt["config"]
    from makd_cli.train.tasks import task_name

    was, now = task_name(old.get("task"), old.get("method", cfg.method)), task_name(cfg.task, cfg.method)
    if was != now:  # a detector's last.pt resumed as a classifier (or back) would not load
        raise resume_mismatch(f"{out}/last.pt", "--task", was, now)
    # train_fraction and val_fraction decide which images train: another value would change the split mid-run
    for key in ("data", "method", "student", "epochs", "batch_size", "seed", "per_class", "train_fraction", "val_fraction",
                "targets", "control", "select_by", "select_every"):
        if old.get(key, getattr(TrainConfig, key, None)) != getattr(cfg, key):  # a key older runs lack: its default
            raise resume_mismatch(f"{out}/last.pt", f"--{key.replace('_', '-')}", old.get(key), getattr(cfg, key))


def train(cfg: TrainConfig) -> dict:
    return run_on_processes(cfg.device, cfg.out, lambda device, info: _train(cfg, device, info))


def run_paths(cfg: TrainConfig) -> tuple[Path, Path, Path]:
    """The run folder and its last.pt / best.pt; a finished run is never overwritten by accident."""
    out = Path(cfg.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if out.exists() and not out.is_dir():
        raise MakdError(f"-o {out} is a file; a run needs a folder (best.pt, last.pt, metrics.jsonl)")
    check_output_path(last_path, "run folder")  # under a file, or a folder that cannot be made: one line now
    if last_path.exists() and not cfg.resume:
        raise MakdError(f"{out} already holds a run; pass --resume to continue it or choose another -o")
    if cfg.resume and not last_path.exists():
        raise MakdError(f"--resume: {last_path} does not exist; start the run without --resume")
    return out, last_path, best_path


def _train(cfg: TrainConfig, device: torch.device, info) -> dict:
    out, last_path, best_path = run_paths(cfg)

    ds = load_dataset(cfg.data, seed=cfg.seed)
    targets = _load_targets(cfg, ds.classes, ds.train, ds.fine_classes)
    train_split, val_split = carve_train_val(
        ds.train, len(ds.classes), cfg.val_fraction, cfg.per_class, cfg.train_fraction, cfg.seed
    )
    size = cfg.image_size or default_image_size(ds.native_size)
    fine_rows = None if targets is None else fine_target_rows(targets, ds.classes, ds.fine_classes)
    ctx = MethodContext(
        num_classes=len(ds.classes), targets=targets, train_ids=train_split.ids, train_labels=train_split.labels,
        weight=cfg.aux_weight, epochs=cfg.epochs,
        target_rows=None if fine_rows is None else fine_rows[train_split.fine_labels],
        options={"aspect_loss": cfg.aspect_loss, "temperature": cfg.kd_temperature, "logit_standardize": cfg.logit_standardize, **cfg.extra},
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

    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.resolved_milestones(), gamma=0.1)
    # The best score starts below any score: without a validation split it is -train_loss, which is
    # below -1 whenever the loss exceeds 1 (a start of -1.0 then never wrote best.pt).
    history, best_val, start_epoch = [], float("-inf"), 0
    if cfg.resume:
        ckpt = load_checkpoint(last_path)
        _check_resume(ckpt, cfg, out)
        for term, saved in zip(terms, ckpt["head"].get("terms", [])):  # the same --method: its terms in the same order
            term.check_resume(saved, f"{out}/last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history, best_val, start_epoch = list(ckpt["history"]), float(ckpt["best_val_top1"]), int(ckpt["epoch"]) + 1

    head = {
        "method": cfg.method, "extra_dim": extra_dim, "terms": [t.head_info() for t in terms],
        "slices": {t.name: [offsets[i], offsets[i + 1]] for i, t in enumerate(terms) if t.extra_dim},
        "targets_kind": targets.kind if targets is not None else None,
        "question_ids": list(targets.question_ids) if targets is not None else [],
        "targets_sha256": sha256_file(cfg.targets) if cfg.targets else None,
    }
    base = {
        "arch": cfg.student, "num_classes": len(ds.classes), "classes": list(ds.classes), "image_size": size,
        "native_size": ds.native_size, "head": head, "config": cfg.to_dict(),
        "split": {"train": len(train_split), "val": len(val_split) if val_split else 0, "test": len(ds.test)},
    }
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    tr_tf, ev_tf = train_transform(size, ds.native_size), eval_transform(size, ds.native_size, cfg.test_resize)
    two_views = any(t.views == 2 for t in terms)  # MLKD: each item is a weak and a strong view, stacked
    if two_views:
        tr_tf = WeakStrong(tr_tf, strong_train_transform(size, ds.native_size))
    ce_weight = ce_weight_of(terms)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" and cfg.amp else nullcontext
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
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
                          drop_last=len(train_split) > cfg.batch_size)
    run = Run(out, last_path, best_path, base, optimizer, scheduler, device, info, workers, history, best_val, start_epoch)
    with TrainProgress(cfg.epochs, start_epoch, quiet=cfg.quiet or not info.main) as bar:
        fit(cfg, run, objective, bar)
    skipped = train_data.unreadable.report()
    if skipped and info.main:  # a warning, on stderr like extraction's: the results stay machine-readable
        print(f"makd: {out}: {unreadable_note(skipped)}", file=sys.stderr)
    return {"out": str(out), "epochs": cfg.epochs, "best_val_top1": run.best_val, "history": run.history, "split": base["split"],
            "unreadable_images": skipped, "selection": run.selection}
