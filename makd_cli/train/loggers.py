"""Experiment trackers for ``makd train --log NAME`` (tensorboard, wandb, trackio, csv; repeatable).

``metrics.jsonl`` stays the record of a run; a tracker is a second copy for watching runs live. The
training loop (``train/engine.py``) calls ``EpochLoggers.log_epoch`` once per finished epoch on rank 0
only; every other rank gets an empty set. Each epoch's record goes out as it is in metrics.jsonl (the
loss and its named parts ``train_<part>``, ``lr``, ``val_top1``, ``test_loss``/``test_top1`` where the
protocol computes them, ``images_per_s``, ``seconds``), with the epoch as the step. The run's resolved
config is logged once as hyperparameters, the run folder's name is the run name, and the seeds of one
``--runs N`` (folders ``OUT/seedK``) share the group ``OUT``'s name.

Logging never changes a result: the random number generators' states are restored around every call
into a tracker, and a tracker that fails (no network, full disk, a bug) prints one warning and is
dropped while training goes on.

A tracker is one decorated class::

    @register_logger("mine", help="...")
    class MineLogger(EpochLogger):
        requires = "mine"  # the module it imports; None: nothing beyond makd
        def __init__(self, ctx: LogContext): ...
        def log_epoch(self, record: dict, history: list[dict]) -> None: ...
"""

from __future__ import annotations

import contextlib
import csv
import io
import importlib.util
import json
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from makd_cli.errors import MakdError
from makd_cli.registry import Registry

LOGGERS: Registry[type] = Registry("logger (--log)")
register_logger = LOGGERS.register
SEED_FOLDER = re.compile(r"seed\d+")


@dataclass
class LogContext:
    """What a tracker is opened with."""

    out: Path  # the run folder
    run_name: str  # the run folder's name
    group: str | None  # the --runs N parent folder's name for OUT/seedK, else None
    hparams: dict  # the resolved config, flat: scalar values only (lists and dicts as JSON text)
    config: dict = field(default_factory=dict)  # the resolved config as it is (nested)
    resumed: bool = False


class EpochLogger:
    """Base class: a tracker receives every finished epoch's record."""

    requires: str | None = None  # module name the tracker imports (an optional extra)
    extra: str | None = None  # pip extra that installs it: pip install 'makd[EXTRA]'; None: pip install REQUIRES

    def __init__(self, ctx: LogContext):
        self.ctx = ctx

    def log_epoch(self, record: dict, history: list[dict]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def numeric_metrics(record: dict) -> dict[str, float]:
    """The record's figures as floats (the epoch is the step, not a metric)."""
    return {k: float(v) for k, v in record.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


@register_logger("tensorboard", help="TensorBoard event files in the run folder (tensorboard --logdir runs/)")
class TensorBoardLogger(EpochLogger):
    requires = "tensorboard"  # a dependency of makd: missing only where it was uninstalled

    def __init__(self, ctx: LogContext):
        super().__init__(ctx)
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(ctx.out), flush_secs=3600)  # flushed once per epoch below
        self.writer.add_text("config", "```\n" + json.dumps(ctx.config, indent=1, sort_keys=True, default=str) + "\n```")
        # The HParams dashboard: the config, and the figures it links to (the scalars of the same tags)
        metrics = {"train_loss": 0.0, "val_top1": 0.0, "test_top1": 0.0}
        exp, ssi, self._sei = hparams({k: v for k, v in ctx.hparams.items() if v is not None}, metrics)
        for summary in (exp, ssi):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def log_epoch(self, record: dict, history: list[dict]) -> None:
        for key, value in numeric_metrics(record).items():
            self.writer.add_scalar(key, value, global_step=record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.file_writer.add_summary(self._sei)
        self.writer.close()


@register_logger("csv", help="metrics.csv in the run folder: one row per epoch, a column per figure")
class CsvLogger(EpochLogger):
    def log_epoch(self, record: dict, history: list[dict]) -> None:
        from makd_cli.fileio import atomic_write_text

        # columns appear as epochs add them (test_* only on checked epochs): the whole file, rewritten atomically
        columns = list(dict.fromkeys(k for r in history for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.ctx.out / "metrics.csv", buf.getvalue())


@register_logger("wandb", help="Weights & Biases (WANDB_MODE=offline keeps the run in OUT/wandb/ for `wandb sync`)")
class WandbLogger(EpochLogger):
    requires = "wandb"
    extra = "wandb"

    def __init__(self, ctx: LogContext):
        super().__init__(ctx)
        import wandb

        # wandb reads its own variables (WANDB_MODE, WANDB_PROJECT, WANDB_ENTITY, WANDB_DIR, WANDB_API_KEY)
        project = None if os.environ.get("WANDB_PROJECT") else "makd"
        with _stdout_to_stderr():
            self.run = wandb.init(project=project, name=ctx.run_name, group=ctx.group, config=ctx.config,
                                  dir=os.environ.get("WANDB_DIR") or str(ctx.out), reinit="create_new")

    def log_epoch(self, record: dict, history: list[dict]) -> None:
        self.run.log(numeric_metrics(record), step=record["epoch"])

    def close(self) -> None:
        with _stdout_to_stderr():
            self.run.finish()


@register_logger("trackio", help="Trackio, local by default (TRACKIO_DIR; TRACKIO_SPACE_ID syncs to a Space)")
class TrackioLogger(EpochLogger):
    requires = "trackio"
    extra = "trackio"

    def __init__(self, ctx: LogContext):
        super().__init__(ctx)
        import trackio

        self.trackio = trackio
        with _stdout_to_stderr():  # trackio prints its banner on stdout: --json output must stay clean
            self.run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", "makd"), name=ctx.run_name, group=ctx.group,
                                    config=ctx.config, resume="allow" if ctx.resumed else "never", embed=False,
                                    auto_log_gpu=False, auto_log_cpu=False)

    def log_epoch(self, record: dict, history: list[dict]) -> None:
        self.run.log(numeric_metrics(record), step=record["epoch"])

    def close(self) -> None:
        with _stdout_to_stderr():
            self.trackio.finish()  # clears trackio's current run too, so its exit hook does not finish it again


@contextlib.contextmanager
def _stdout_to_stderr():
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def _rng_kept():
    """Whatever a tracker draws (run ids, sampling), the run's random streams continue as without it."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def check_logger_names(names) -> list[str]:
    """The --log names, deduplicated and checked: an unknown name or a missing optional package is one line now,
    before any training."""
    names = list(dict.fromkeys(names or []))
    for name in names:
        cls = LOGGERS.get(name)
        if cls.requires and importlib.util.find_spec(cls.requires) is None:
            how = f"pip install 'makd[{cls.extra}]'" if cls.extra else f"pip install {cls.requires}"
            raise MakdError(f"--log {name} needs the {cls.requires} package: {how}")
    return names


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """Scalars as they are, nested dicts as ``a.b``, anything else (lists) as JSON text: every tracker takes these."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, (str, int, float, bool)):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = json.dumps(value, default=str)
    return flat


def resolved_config(cfg, base: dict | None = None) -> dict:
    """The config as the run used it: the schedule and protocol defaults filled in, and what the data decided."""
    config = cfg.to_dict()
    config.pop("log", None)
    config["milestones"] = cfg.resolved_milestones()
    config["select_every"] = cfg.resolved_select_every()
    for key in ("arch", "image_size", "num_classes", "split"):
        if base and key in base:
            config[key] = base[key]
    return config


class EpochLoggers:
    """The trackers of one run; a failing one warns once and is dropped."""

    def __init__(self, loggers: list[tuple[str, EpochLogger]]):
        self.loggers = loggers

    def _call(self, name: str, logger: EpochLogger, what: str, *args) -> bool:
        try:
            with _rng_kept():
                getattr(logger, what)(*args)
            return True
        except Exception as exc:  # a tracker never stops training: say so once and go on without it
            warn(f"--log {name} failed ({type(exc).__name__}: {exc}); training goes on without it")
            return False

    def log_epoch(self, history: list[dict]) -> None:
        self.loggers = [(n, lg) for n, lg in self.loggers if self._call(n, lg, "log_epoch", history[-1], history)]

    def close(self) -> None:
        for name, logger in self.loggers:
            self._call(name, logger, "close")
        self.loggers = []


def warn(text: str) -> None:
    print("makd: warning: " + " ".join(text.split()), file=sys.stderr)


def open_loggers(cfg, run) -> EpochLoggers:
    """The trackers ``cfg.log`` names, opened for ``run`` (an ``engine.Run``); none on ranks other than 0."""
    names = list(getattr(cfg, "log", None) or [])
    if not names or not run.info.main:
        return EpochLoggers([])
    out = Path(run.out)
    config = resolved_config(cfg, run.base)
    group = out.parent.name if SEED_FOLDER.fullmatch(out.name) else None
    ctx = LogContext(out=out, run_name=out.name if not group else f"{group}/{out.name}", group=group,
                     hparams=flat_hparams(config), config=config, resumed=bool(cfg.resume))
    opened = []
    for name in check_logger_names(names):
        try:
            with _rng_kept():
                opened.append((name, LOGGERS.get(name)(ctx)))
        except Exception as exc:
            warn(f"--log {name} could not start ({type(exc).__name__}: {exc}); training goes on without it")
    return EpochLoggers(opened)
