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
    probe: bool | str | None = None  # LEAD's self-supervised protocol too: "sgd" (True) or "quick" (evaluate/probe.py)
    probe_epochs: int = 100  # --probe sgd: the public code's 100 epochs
    retrieval: str = "test"  # leave-one-out within the test split; "train-test": test queries, training gallery
    progress: bool = True
    test_resize: int | None = None  # --test-resize: None uses each checkpoint's own (its training --test-resize)


def detection_paths(paths: list[Path]) -> list[Path]:
    """The checkpoints of ``paths`` that are detectors (``makd train --task detection``); each is loaded
    when its turn comes (Table 7's 36 runs would hold several GB at once)."""
    from makd_cli.detection.evaluate import is_detection_file

    return [p for p in paths if is_detection_file(p)]


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
    detection = detection_paths(paths)
    if detection:  # COCO AP of detectors (detection/evaluate.py): a table of its own
        from makd_cli.detection.evaluate import detection_table, evaluate_detection
        from makd_cli.formats.checkpoint import load_checkpoint

        if len(detection) < len(paths) or cfg.probe:
            raise MakdError("evaluate detection runs on their own (COCO AP), without classifiers and without --probe")
        if targets:  # the aspect agreement is a classifier's figure; a detector's eval is COCO AP alone
            raise MakdError("--targets measures a classifier's aspect outputs; detection runs report COCO AP: drop --targets")
        with progress_bar("evaluate", len(paths), cfg.progress) as advance:
            results = []
            for p in detection:
                results.append(evaluate_detection(str(p), load_checkpoint(p), cfg.data, cfg.split, device=dev))
                advance(info=p.name)
        return {"results": results, "table": detection_table(results)}
    results = []
    with progress_bar("evaluate", len(paths), cfg.progress) as advance:
        for p in paths:
            results.append(evaluate_checkpoint(str(p), cfg.data, targets, cfg.split, device=dev, test_resize=cfg.test_resize))
            advance(info=p.name)
    if cfg.probe:  # LEAD's self-supervised protocol: linear probe and retrieval on frozen features
        from makd_cli.evaluate.probe import probe_checkpoint

        protocol = "sgd" if cfg.probe is True else str(cfg.probe)
        with progress_bar("probe", len(paths), cfg.progress) as advance:
            for p, r in zip(paths, results):
                r["probe"] = probe_checkpoint(str(p), cfg.data, device=dev, protocol=protocol, epochs=cfg.probe_epochs,
                                              retrieval=cfg.retrieval)
                advance(info=p.name)
    return {"results": results, "table": comparison_table(results)}
