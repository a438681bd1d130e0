"""``--runs N``: the same run for seeds seed..seed+N-1, each in OUTPUT/seedK."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.fileio import check_outputs_distinct
from makd_cli.job_paths import train_paths
from makd_cli.run_folder import check_run_folder
from makd_cli.train.config import TrainConfig
from makd_cli.train.task import train


def train_runs(cfg: TrainConfig, runs: int = 1) -> list[dict]:
    if runs < 1:
        raise MakdError("--runs must be at least 1")
    if cfg.epochs < 1:
        raise MakdError("--epochs must be at least 1")
    # one dispatcher (train/task.py): --task NAME, else the task that owns --method
    check_outputs_distinct(*train_paths(cfg, runs))  # before the run folder is cleared (--overwrite) or written
    check_run_folder(Path(cfg.out), runs=runs, resume=cfg.resume, fresh=cfg.overwrite or cfg.restart)  # before any work
    if runs == 1:
        return [train(cfg)]
    return [train(replace(cfg, seed=cfg.seed + k, out=str(Path(cfg.out) / f"seed{cfg.seed + k}"))) for k in range(runs)]
