"""Evaluators of checkpoints that are not classifiers, as plug-ins: ``makd eval`` asks each registered one
whether it claims a checkpoint (a detector from ``--task detection``: COCO AP) and hands it those.

The detection evaluator lives in ``makd_cli/detection/evaluate.py`` and is imported by name on first use,
so evaluate/ never imports detection/ (detection builds on evaluate's report, not the other way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from makd_cli.registry import Registry


@dataclass(frozen=True)
class CheckpointEvaluator:
    claims: Callable  # (checkpoint path) -> bool, without loading the weights where it can
    evaluate: Callable  # (path: str, ckpt: dict, data: str | None, split: str, device: str) -> one result dict
    table: Callable  # (results) -> the comparison DataFrame (its attrs["task"] names this evaluator)
    show: Callable  # (found, *, split, fmt, as_json, console) -> prints it
    exclusive: str = "evaluate these runs on their own"  # the line when mixed with classifiers or --probe


EVALUATORS: Registry[CheckpointEvaluator] = Registry("checkpoint evaluator", kind="evaluator",
                                                   modules=("makd_cli.detection.evaluate",))
register_evaluator = EVALUATORS.register
