"""Training objectives as registered tasks; ``--method`` picks the task that owns it.

- ``classify``: CE on the class logits plus one loss term per method of ``--method`` (``train/loop.py``);
  it owns every method of the ``METHODS`` registry (lavid, makd, kd, ... and their combinations).
- ``moco``: LEAD's self-supervised MoCo v2 with entropy-weighted distillation (``train/moco.py``,
  ``--method lead-ssl``).

A new objective (detection, say) is one more ``TASKS.add`` with the ``--method`` names it owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from makd_cli.registry import Option, Registry
from makd_cli.train.config import TrainConfig


@dataclass(frozen=True)
class Task:
    run: Callable[[TrainConfig], dict]  # trains one seed, returns the run summary
    methods: tuple[str, ...] = ()  # the --method values it owns; () = every method of METHODS


def _classify(cfg: TrainConfig) -> dict:
    from makd_cli.train.loop import train

    return train(cfg)


def _moco(cfg: TrainConfig) -> dict:
    from makd_cli.train.moco import train_moco

    return train_moco(cfg)


TASKS: Registry[Task] = Registry("training task")
register_task = TASKS.add
TASKS.add("classify", Task(_classify), "CE on the class logits plus each --method term (ce, lavid, makd, kd, ...)")
TASKS.add("moco", Task(_moco, ("lead-ssl",)), "LEAD's self-supervised MoCo v2 with entropy-weighted distillation", options=[
    Option("moco-queue", int, 65536, "--method lead-ssl: MoCo v2 queue of negative keys (the paper: 65536).", min=1),
    Option("moco-momentum", float, 0.999, "--method lead-ssl: momentum of the key encoder.", min=0, max=1),
    Option("moco-temperature", float, 0.2, "--method lead-ssl: InfoNCE temperature.", min=0),
    Option("moco-dim", int, 128, "--method lead-ssl: output width of the projection MLP.", min=1),
])


def task_for(method: str) -> Task:
    """The task that owns ``--method method``: the one that names it, else ``classify``."""
    for entry in TASKS.entries():
        if method in entry.obj.methods:
            return entry.obj
    return TASKS.get("classify")


def task_methods() -> list[str]:
    """``--method`` values owned by a task rather than by the METHODS registry."""
    return sorted(m for e in TASKS.entries() for m in e.obj.methods)
