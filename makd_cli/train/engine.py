"""The one training loop every task runs (open_clip's pattern: objectives differ, the loop does not).

A task (``train/tasks.py``) builds its modules and hands ``fit`` an ``Objective``: the training data,
one step's loss and what follows the optimizer step. ``fit`` owns everything else, the same way for
every task: per-epoch reseeding (so ``--resume`` is bit-identical), the loader (a DistributedSampler
under torchrun), train mode, the loss check, the optimizer and scheduler steps, the per-epoch record,
validation, the choice of the epoch ``best.pt`` holds (``--select-by``), ``best.pt`` / ``last.pt`` /
``metrics.jsonl`` written atomically, and the progress bar.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from makd_cli.errors import MakdError
from makd_cli.fileio import atomic_write_text
from makd_cli.formats.checkpoint import save_checkpoint
from makd_cli.train.distributed import DistInfo, all_reduce_sums, barrier
from makd_cli.train.divergence import DivergenceGuard, chance_note
from makd_cli.train.loggers import open_loggers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _no_op(*_args) -> None:
    return None


@dataclass
class Objective:
    """What one training task contributes to the loop."""

    model: nn.Module  # the student: ``model`` in both checkpoints
    data: torch.utils.data.Dataset  # items are tuples of tensors (or ints), moved to the device per batch
    train_modules: list[nn.Module]  # put in train mode at the start of every epoch
    # (batch on the device, epoch) -> (loss to minimise, named parts to log as train_<name>; floats or tensors)
    step: Callable[[tuple, int], tuple[Tensor, dict]]
    after_step: Callable[[tuple], None] = _no_op  # after optimizer.step(): momentum encoders, queues
    validate: Callable[[], dict] | None = None  # -> {"val_top1": ...}; None: no validation
    # -> {"test_loss": CE, "test_top1": %} on the test split, read only by the papers' protocols
    # (--select-by test-loss / test-acc); None: the task cannot be scored there (no class head)
    evaluate_test: Callable[[], dict] | None = None
    extra_state: Callable[[], dict] = dict  # more of last.pt (resume), e.g. a key encoder and its queue
    parts: tuple[str, ...] = ()  # names of the logged parts, in order (train_<name> in every record)
    batch_size: int = 16
    drop_last: bool = True
    keep: str = "best"  # best: best.pt is the best-scoring epoch; latest: every epoch replaces it
    loss_hint: str = "lower --lr or --aux-weight"
    part_weights: dict = field(default_factory=dict)  # each part's weight, named when it diverges (train/divergence.py)
    collate: Callable | None = None  # the loader's collate_fn; None: stack (detection: lists of images and boxes)


@dataclass
class Run:
    """Where a run writes and where it stands (fresh, or loaded from last.pt by the task)."""

    out: Path
    last_path: Path
    best_path: Path
    base: dict  # the checkpoint fields every epoch shares (arch, classes, head, config, split)
    optimizer: torch.optim.Optimizer
    scheduler: object
    device: torch.device
    info: DistInfo = field(default_factory=DistInfo)
    workers: int = 0
    history: list = field(default_factory=list)
    best_val: float = float("-inf")  # below any score: -train_loss is below -1 whenever the loss exceeds 1
    start_epoch: int = 0
    selection: dict = field(default_factory=dict)  # which epoch best.pt holds and why (select_epoch)


def _to_device(items, device: torch.device) -> tuple:
    return tuple(x.to(device, non_blocking=True) if isinstance(x, Tensor) else x for x in items)


# The metric each --select-by protocol ranks epochs by, and whether a tie goes to the later epoch:
# mdistiller (MaKD) saves best on test_acc >= best_acc; Lightning (LaViD) replaces only a strictly lower loss.
SELECTION_METRIC = {"val": ("val_top1", "val", False), "test-loss": ("test_loss", "test", False),
                    "test-acc": ("test_top1", "test", True)}


def is_check_epoch(epoch: int, every: int, epochs: int) -> bool:
    """Whether 0-based ``epoch`` is a candidate for best.pt: every ``every``-th epoch, as the references
    check (Lightning's check_val_every_n_epoch), and the last one, so a run shorter than the interval
    still has a best.pt (240 epochs: the same epochs as the reference)."""
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


def selection_score(record: dict, by: str) -> float:
    """Higher is better. Without a validation split the "val" protocol ranks by -train_loss."""
    if by == "val":
        return record.get("val_top1", -record["train_loss"])
    metric = SELECTION_METRIC[by][0]
    return -record[metric] if by == "test-loss" else record[metric]


def select_epoch(history: list[dict], by: str, every: int, epochs: int) -> tuple[int | None, float]:
    """The 1-based epoch best.pt holds after ``history``, and its score: a pure function of the
    records, so a resumed run chooses exactly as an uninterrupted one."""
    best_epoch, best_score = None, float("-inf")
    later_wins = SELECTION_METRIC[by][2]
    for rec in history:
        if not is_check_epoch(rec["epoch"] - 1, every, epochs):
            continue
        score = selection_score(rec, by)
        if best_epoch is None or score > best_score or (later_wins and score == best_score):
            best_epoch, best_score = rec["epoch"], score
    return best_epoch, best_score


def selection_info(cfg, history: list[dict], keep: str) -> dict:
    """What the checkpoints record about the protocol: ``makd eval`` shows it and marks test-split choices."""
    if keep == "latest":
        return {"by": "latest", "every": 1, "split": None, "epoch": history[-1]["epoch"] if history else None}
    by, every = cfg.select_by, cfg.resolved_select_every()
    epoch, _ = select_epoch(history, by, every, cfg.epochs)
    metric, split, _ = SELECTION_METRIC[by]
    rec = next((r for r in history if r["epoch"] == epoch), {})
    if by == "val" and metric not in rec:
        metric, split = "train_loss", "train"  # no validation split: the lowest training loss
    return {"by": by, "every": every, "split": split, "metric": metric, "epoch": epoch, "value": rec.get(metric)}


def fit(cfg, run: Run, obj: Objective, bar) -> Run:
    """Train epochs ``run.start_epoch`` .. ``cfg.epochs - 1``; ``bar`` is a ``TrainProgress``."""
    info, device = run.info, run.device
    select_by, every = cfg.select_by, cfg.resolved_select_every()
    if select_by != "val" and obj.evaluate_test is None and obj.keep != "latest":
        raise MakdError(f"--select-by {select_by} scores epochs on the test split's labels; --method {cfg.method} "
                        "cannot be scored there: use --select-by val")
    if select_by != "val" and obj.keep == "latest":
        raise MakdError(f"--method {cfg.method} keeps its latest epoch (no labels to choose by); drop --select-by {select_by}")
    guard = DivergenceGuard(obj.part_weights, obj.loss_hint)  # a non-finite or exploding term stops the run
    loggers = open_loggers(cfg, run)  # --log: experiment trackers, rank 0 only (train/loggers.py)
    for epoch in range(run.start_epoch, cfg.epochs):
        epoch_seed = cfg.seed * 100_003 + epoch
        seed_everything(epoch_seed)
        gen = torch.Generator().manual_seed(epoch_seed)
        sampler = None
        if info.enabled:
            sampler = torch.utils.data.distributed.DistributedSampler(obj.data, info.world, info.rank, shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            obj.data, batch_size=obj.batch_size, shuffle=sampler is None, sampler=sampler, generator=gen,
            num_workers=run.workers, drop_last=obj.drop_last, pin_memory=device.type == "cuda", persistent_workers=False,
            collate_fn=obj.collate,
        )
        for module in obj.train_modules:
            module.train()
        t0, sums, n_seen = time.time(), {"loss": 0.0, **{name: 0.0 for name in obj.parts}}, 0
        bar.start_epoch(epoch, len(loader))
        for items in loader:
            batch = _to_device(items, device)
            loss, parts = obj.step(batch, epoch)
            guard.check(loss, parts, epoch)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            obj.after_step(batch)
            b = batch[0].shape[0]
            n_seen += b
            sums["loss"] += loss.item() * b
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value) * b
            bar.step(loss.item())
        run.scheduler.step()
        sums = all_reduce_sums({**sums, "_n": float(n_seen)}, info)
        n_seen = int(sums.pop("_n"))
        record = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2),
                  "images_per_s": round(n_seen / max(time.time() - t0, 1e-9), 1),
                  **{f"train_{k}": v / max(n_seen, 1) for k, v in sums.items()}}
        if obj.validate is not None:
            record.update(obj.validate())
        if select_by != "val" and is_check_epoch(epoch, every, cfg.epochs):
            record.update(obj.evaluate_test())  # the papers' protocols: the test split chooses the checkpoint
        run.history.append(record)
        if obj.keep == "latest":
            is_best, run.best_val = True, selection_score(record, "val")
        else:
            best_epoch, run.best_val = select_epoch(run.history, select_by, every, cfg.epochs)
            is_best = best_epoch == epoch + 1
        run.selection = selection_info(cfg, run.history, obj.keep)
        run.selection.update(chance_note(run.history, run.base.get("num_classes"), (run.base.get("split") or {}).get("val")))
        record.update({"at_chance": True} if run.selection.get("at_chance") else {})  # metrics.jsonl says so too
        state = {**run.base, "model": obj.model.state_dict(), "epoch": epoch, "history": run.history,
                 "best_val_top1": run.best_val, "metrics": record, "selection": run.selection}
        if info.main:
            if is_best:
                save_checkpoint(run.best_path, state)
            save_checkpoint(run.last_path, {**state, **obj.extra_state(), "optimizer": run.optimizer.state_dict(),
                                            "scheduler": run.scheduler.state_dict()})
            atomic_write_text(run.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.history))
            loggers.log_epoch(run.history)
        barrier(info)
        bar.end_epoch(record)
    loggers.close()
    return run
