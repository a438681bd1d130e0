"""The training-task interface and the one setup every task shares (open_clip's ``TrainingTask`` pattern).

A task is a registered ``TrainingTask`` subclass: it says which ``--method`` names it owns and fills in
the hooks that differ between objectives (``build``: the data, the model and its heads, one step's loss
and its named parts, validation, extra resume state, as an ``Objective``; ``scheduler``;
``check_resume`` / ``load_state`` for what a task keeps beyond the model). ``train_task`` does the rest
the same way for every task: the run folder and its lock, the processes (torchrun / DDP), the
optimizer, ``--resume`` and its checks, the checkpoint's shared fields, the progress bar and ``fit``.

``train(cfg)`` and ``makd train`` reach a task through one dispatcher, ``task_of(cfg)``: ``--task NAME``
when given, else the task that owns ``--method``, else ``classify``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from makd_cli.errors import MakdError, resume_mismatch
from makd_cli.fileio import check_output_path, sha256_file
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.input_hashes import check_resume_inputs
from makd_cli.run_folder import check_run_folder
from makd_cli.train.config import TrainConfig
from makd_cli.train.distributed import DistInfo, run_on_processes
from makd_cli.train.engine import Objective, Run, fit
from makd_cli.train.progress import TrainProgress
from makd_cli.train.tasks import TASKS, task_name


@dataclass
class Env:
    """Where a task is built: the device, the processes, the run folder and the loader workers."""

    device: torch.device
    info: DistInfo
    out: Path
    workers: int


@dataclass
class Built:
    """What a task's ``build`` hook returns."""

    objective: Objective
    params: list  # the parameters the optimizer updates
    base: dict  # checkpoint fields of the task: arch, num_classes, classes, image_size, native_size, split, ...
    head: dict  # the head record: method, extra_dim, terms, slices, ... (the targets' kind, ids and hash are added)
    targets: object = None  # the Targets read for the run, if any
    state: dict = field(default_factory=dict)  # whatever the task's other hooks need from the build


class TrainingTask:
    """One training objective. Subclass it, fill the hooks, register it with ``@register_task``."""

    name = "?"
    methods: tuple[str, ...] = ()  # the --method values it owns; none: the task is chosen by --task NAME
    defaults: dict = {}  # schedule settings of --task NAME for flags not given (detection: COCO's 1x)
    progress = TrainProgress  # the progress bar and epoch line
    holds_out_classes = False  # takes --hold-out-classes (unseen-class evaluation of its extra outputs)

    def check(self, cfg: TrainConfig) -> None:
        """Refuse settings the task cannot train, before anything is loaded (one line)."""

    def build(self, cfg: TrainConfig, env: Env) -> Built:
        raise NotImplementedError

    def scheduler(self, cfg: TrainConfig, optimizer, built: Built):
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.resolved_milestones(), gamma=0.1)

    def check_resume(self, ckpt: dict, cfg: TrainConfig, built: Built, where: str) -> None:
        """Stop (one line) when ``last.pt`` was trained with task settings other than ``cfg``'s."""

    def load_state(self, ckpt: dict, built: Built) -> None:
        """Restore what the task keeps in ``last.pt`` beyond the model, optimizer and scheduler."""

    def summary(self, cfg: TrainConfig, run: Run, built: Built) -> dict:
        return {"out": str(run.out), "epochs": cfg.epochs, "best_val_top1": run.best_val, "history": run.history,
                "split": run.base["split"], "selection": run.selection}

    def train(self, cfg: TrainConfig) -> dict:
        return train_task(self, cfg)


def default_workers(device: torch.device) -> int:
    # On a small CPU box the loader workers would steal cores from the model itself.
    cpus = os.cpu_count() or 1
    return 0 if device.type == "cpu" and cpus <= 4 else min(8, cpus - 1)


def run_paths(cfg: TrainConfig) -> tuple[Path, Path, Path]:
    """The run folder and its last.pt / best.pt; a finished run is never overwritten by accident."""
    out = Path(cfg.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if out.exists() and not out.is_dir():
        raise MakdError(f"-o {out} is a file; a run needs a folder (best.pt, last.pt, metrics.jsonl)")
    check_output_path(last_path, "run folder")  # under a file, or a folder that cannot be made: one line now
    if last_path.exists() and not (cfg.resume or cfg.overwrite or cfg.restart):
        raise MakdError(f"{out} already holds a run; pass --resume to continue it or choose another -o")
    if cfg.resume and not last_path.exists():
        raise MakdError(f"--resume: {last_path} does not exist; start the run without --resume")
    return out, last_path, best_path


def load_targets(cfg: TrainConfig, classes: list[str], train_split=None, fine_classes=()):
    """The run's targets (``--targets``), checked against the classes, with ``--control`` applied."""
    from makd_cli.formats.targets import read_targets
    from makd_cli.methods.base import fine_target_rows

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
        targets = apply_control(cfg.control, targets, cfg.seed, **extra, **cfg.options_of("control", cfg.control))
    return targets


# Settings that decide what a run trains on and how: another value on --resume is a different run.
RESUME_KEYS = ("data", "method", "student", "epochs", "batch_size", "seed", "per_class", "train_fraction", "val_fraction",
               "targets", "control", "select_by", "select_every", "hold_out_classes")


def check_resume(ckpt: dict, cfg: TrainConfig, out: Path) -> None:
    old = ckpt["config"]
    was, now = task_name(old.get("task"), old.get("method", cfg.method)), task_name(cfg.task, cfg.method)
    if was != now:  # a detector's last.pt resumed as a classifier (or back) would not load
        raise resume_mismatch(f"{out}/last.pt", "--task", was, now)
    # train_fraction and val_fraction decide which images train: another value would change the split mid-run
    for key in RESUME_KEYS:
        if old.get(key, getattr(TrainConfig, key, None)) != getattr(cfg, key):  # a key older runs lack: its default
            raise resume_mismatch(f"{out}/last.pt", f"--{key.replace('_', '-')}", old.get(key), getattr(cfg, key))
    check_resume_inputs(ckpt, cfg, out)  # the same paths, but the same contents? (targets and data by hash)


def check_hold_out_task(cfg: TrainConfig) -> None:
    """Only a task that declares it (``holds_out_classes``: classify) holds classes out; another says so in one line."""
    task = task_of(cfg)
    if cfg.hold_out_classes and not task.holds_out_classes:
        raise MakdError(f"--hold-out-classes is for classifiers (unseen-class evaluation of their extra outputs); "
                        f"the {task.name} task does not take it")


def train_task(task: TrainingTask, cfg: TrainConfig) -> dict:
    """Train one run of ``task``: its GPU under torchrun, rank 0 writing under the run lock."""
    check_hold_out_task(cfg)
    task.check(cfg)
    if os.environ.get("RANK", "0") == "0":  # before the run lock: --overwrite clears the folder under it
        check_run_folder(Path(cfg.out), runs=1, resume=cfg.resume, fresh=cfg.overwrite or cfg.restart)
    return run_on_processes(cfg.device, cfg.out, lambda device, info: _train(task, cfg, device, info))


def _train(task: TrainingTask, cfg: TrainConfig, device: torch.device, info: DistInfo) -> dict:
    out, last_path, best_path = run_paths(cfg)
    env = Env(device, info, out, default_workers(device) if cfg.workers is None else cfg.workers)
    built = task.build(cfg, env)
    optimizer = torch.optim.SGD(built.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = task.scheduler(cfg, optimizer, built)
    # The best score starts below any score: without a validation split it is -train_loss.
    history, best_val, start_epoch = [], float("-inf"), 0
    if cfg.resume:
        ckpt = load_checkpoint(last_path)
        check_resume(ckpt, cfg, out)
        task.check_resume(ckpt, cfg, built, f"{out}/last.pt")
        built.objective.model.load_state_dict(ckpt["model"])
        task.load_state(ckpt, built)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        saved_best = ckpt.get("best_val_top1")
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"]) + 1
        best_val = float(saved_best) if saved_best is not None else best_val

    targets = built.targets
    head = {**built.head,
            "targets_kind": targets.kind if targets is not None else None,
            "question_ids": list(targets.question_ids) if targets is not None else [],
            "targets_sha256": sha256_file(cfg.targets) if cfg.targets else None}
    base = {**built.base, "head": head, "config": cfg.to_dict()}
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
    run = Run(out, last_path, best_path, base, optimizer, scheduler, device, info, env.workers, history, best_val, start_epoch)
    with task.progress(cfg.epochs, start_epoch, quiet=cfg.quiet or not info.main) as bar:
        fit(cfg, run, built.objective, bar)
    return task.summary(cfg, run, built)


def task_of(cfg: TrainConfig) -> TrainingTask:
    return TASKS.get(task_name(cfg.task, cfg.method))


def train(cfg: TrainConfig) -> dict:
    """Train one run with the task ``cfg`` names (``--task``) or the one that owns its ``--method``."""
    return task_of(cfg).train(cfg)
