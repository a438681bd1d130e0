"""The registry of training tasks (``--task``; the task that owns ``--method``).

A task is a ``train.task.TrainingTask`` subclass registered with ``@register_task``: ``classify`` (CE +
the METHODS terms, ``train/loop.py``) and ``moco`` (LEAD's self-supervised MoCo v2, ``train/moco.py``)
live in this package, ``detection`` (Faster R-CNN + FPN with MaKD's aspect head) in
``makd_cli/detection/train.py``, imported by name on first use so that train/ never imports
detection/; a task from an installed plug-in package arrives through the ``makd.plugins`` entry points.
This module imports nothing of the tasks themselves: the config and the CLI ask it which task owns a
``--method`` without loading any.
"""

from __future__ import annotations

from makd_cli.registry import Registry

TASKS: Registry = Registry("training task", package="makd_cli.train", kind="task", modules=("makd_cli.detection.train",),
                           skip=("config", "distributed", "engine", "plugin_options", "progress", "runs", "task", "tasks"))


def register_task(name: str, help: str = "", options=()):
    """``@register_task("mine", options=[...])`` on a ``TrainingTask`` subclass registers an instance of it."""

    def deco(cls):
        cls.name = name
        TASKS.add(name, cls(), help, options)
        return cls

    return deco


def task_name(task: str | None, method: str) -> str:
    """The task a run trains: ``--task`` when given, else the one that owns ``--method``, else ``classify``."""
    if task:
        return task
    return next((e.name for e in TASKS.entries() if method in e.obj.methods), "classify")


def task_methods() -> list[str]:
    """``--method`` values owned by a task rather than by the METHODS registry."""
    return sorted(m for e in TASKS.entries() for m in e.obj.methods)
