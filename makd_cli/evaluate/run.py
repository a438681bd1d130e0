"""The ``makd eval`` job: evaluate checkpoints, return the results and their comparison table.

``cli.py`` prints them (``evaluate/show.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.run_folder import run_checkpoints
from makd_cli.evaluate.report import comparison_table, evaluate_checkpoint
from makd_cli.progress import progress_bar
from makd_cli.device import resolve_device


def expand_checkpoints(paths: list[Path]) -> list[Path]:
    """Run folders stand for their best.pt, else last.pt, and each seedN/ of multi-seed runs (``run_folder.py``)."""
    return [c for p in paths for c in run_checkpoints(Path(p))]


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    checkpoints: list = field(default_factory=list)  # checkpoints or run folders
    data: str | None = None  # None: the dataset each checkpoint was trained on
    targets: str | None = None  # None: the training targets
    split: str = "test"
    device: str = "auto"
    probe: bool = False  # LEAD's self-supervised protocol too
    progress: bool = True


def run_eval(cfg: EvalConfig) -> dict:
    """``{"results": [one dict per checkpoint], "table": the comparison table (a DataFrame)}``."""
    if cfg.split not in ("test", "train"):
        raise MakdError("--split must be test or train")
    dev = str(resolve_device(cfg.device))
    paths = expand_checkpoints(list(cfg.checkpoints))
    targets = str(cfg.targets) if cfg.targets else None
    results = []
    with progress_bar("evaluate", len(paths), cfg.progress) as advance:
        for p in paths:
            results.append(evaluate_checkpoint(str(p), cfg.data, targets, cfg.split, device=dev))
            advance(info=p.name)
    if cfg.probe:  # LEAD's self-supervised protocol: linear probe and retrieval on frozen features (train -> test)
        from makd_cli.evaluate.probe import probe_checkpoint

        with progress_bar("probe", len(paths), cfg.progress) as advance:
            for p, r in zip(paths, results):
                r["probe"] = probe_checkpoint(str(p), cfg.data, device=dev)
                advance(info=p.name)
    return {"results": results, "table": comparison_table(results)}
