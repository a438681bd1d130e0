"""The ``makd eval`` job: evaluate checkpoints, return the results and their comparison table.

``cli.py`` prints them (``evaluate/show.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.run_folder import run_checkpoints
from makd_cli.evaluate.evaluators import EVALUATORS
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
    probe: bool | str | None = None  # LEAD's self-supervised protocol too: "sgd" (True) or "quick" (evaluate/probe.py)
    probe_epochs: int = 100  # --probe sgd: the public code's 100 epochs
    retrieval: str = "test"  # leave-one-out within the test split; "train-test": test queries, training gallery
    progress: bool = True
    unseen: bool = False  # the held-out classes' figures too (--hold-out-classes runs; evaluate/unseen.py)
    test_resize: int | None = None  # --test-resize: None uses each checkpoint's own (its training --test-resize)


def run_eval(cfg: EvalConfig) -> dict:
    """``{"results": [one dict per checkpoint], "table": the comparison table (a DataFrame)}``."""
    if cfg.split not in ("test", "train"):
        raise MakdError("--split must be test or train")
    if cfg.probe:  # before any evaluation: a wrong protocol name is one line at once
        from makd_cli.evaluate.probe import PROBE_PROTOCOLS, RETRIEVAL_PROTOCOLS

        if cfg.probe is not True and cfg.probe not in PROBE_PROTOCOLS:
            raise MakdError(f"--probe {cfg.probe!r}: choose one of {', '.join(PROBE_PROTOCOLS)}")
        if cfg.retrieval not in RETRIEVAL_PROTOCOLS:
            raise MakdError(f"--retrieval {cfg.retrieval!r}: choose one of {', '.join(RETRIEVAL_PROTOCOLS)}")
    dev = str(resolve_device(cfg.device))
    paths = expand_checkpoints(list(cfg.checkpoints))
    targets = str(cfg.targets) if cfg.targets else None
    if cfg.unseen and cfg.split != "test":  # the held-out classes' images are in the test split alone
        raise MakdError("--unseen scores classifiers' held-out classes on the test split: drop --split train")
    for entry in EVALUATORS.entries():  # checkpoints of other tasks (a detector: COCO AP) get a table of their own
        claimed = [p for p in paths if entry.obj.claims(p)]  # each loaded when its turn comes (Table 7: 36 runs)
        if not claimed:
            continue
        if cfg.unseen:
            raise MakdError(f"--unseen scores classifiers' held-out classes; drop the {entry.name} runs")
        from makd_cli.formats.checkpoint import load_checkpoint

        if len(claimed) < len(paths) or cfg.probe:
            raise MakdError(entry.obj.exclusive)
        if targets:  # the aspect agreement is a classifier's figure
            raise MakdError(f"--targets measures a classifier's aspect outputs; {entry.name} runs have their own figures: drop --targets")
        with progress_bar("evaluate", len(paths), cfg.progress) as advance:
            results = []
            for p in claimed:
                results.append(entry.obj.evaluate(str(p), load_checkpoint(p), cfg.data, cfg.split, device=dev))
                advance(info=p.name)
        return {"results": results, "table": entry.obj.table(results)}
    results = []
    with progress_bar("evaluate", len(paths), cfg.progress) as advance:
        for p in paths:
            results.append(evaluate_checkpoint(str(p), cfg.data, targets, cfg.split, device=dev, test_resize=cfg.test_resize))
            advance(info=p.name)
    from makd_cli.evaluate.last_epoch import add_last_epochs  # the last epoch beside the chosen one

    add_last_epochs(paths, results, lambda last: evaluate_checkpoint(last, cfg.data, targets, cfg.split, device=dev,
                                                                     test_resize=cfg.test_resize))
    if cfg.unseen:
        from makd_cli.evaluate.unseen_run import add_unseen

        add_unseen(results, paths, cfg.data, targets, dev)
    if cfg.probe:  # LEAD's self-supervised protocol: linear probe and retrieval on frozen features
        from makd_cli.evaluate.probe import probe_checkpoint

        protocol = "sgd" if cfg.probe is True else str(cfg.probe)
        with progress_bar("probe", len(paths), cfg.progress) as advance:
            for p, r in zip(paths, results):
                r["probe"] = probe_checkpoint(str(p), cfg.data, device=dev, protocol=protocol, epochs=cfg.probe_epochs,
                                              retrieval=cfg.retrieval)
                advance(info=p.name)
    return {"results": results, "table": comparison_table(results)}
