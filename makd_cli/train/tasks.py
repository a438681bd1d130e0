"""Training objectives as registered tasks; ``--method`` picks the task that owns it.

- ``classify``: CE on the class logits plus one loss term per method of ``--method`` (``train/loop.py``);
  it owns every method of the ``METHODS`` registry (lavid, makd, kd, ... and their combinations).
- ``moco``: LEAD's self-supervised MoCo v2 with entropy-weighted distillation (``train/moco.py``,
  ``--method lead-ssl``).

- ``detection``: Faster R-CNN + FPN with MaKD's aspect head (``makd_cli/detection/``), chosen by
  ``--task detection`` (it owns no ``--method`` name: ``ce`` and ``makd`` mean the plain and the
  aspect-augmented detector there).

A new objective is one more ``TASKS.add`` with the ``--method`` names it owns (or none: ``--task NAME``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from makd_cli.detection import SCHEDULE_1X
from makd_cli.registry import Option, Registry
from makd_cli.train.config import TrainConfig


@dataclass(frozen=True)
class Task:
    run: Callable[[TrainConfig], dict]  # trains one seed, returns the run summary
    methods: tuple[str, ...] = ()  # the --method values it owns; () = every method of METHODS
    # schedule defaults of --task NAME that replace TrainConfig's for flags not given (detection: COCO 1x)
    defaults: dict = field(default_factory=dict)


def _classify(cfg: TrainConfig) -> dict:
    from makd_cli.train.loop import train

    return train(cfg)


def _moco(cfg: TrainConfig) -> dict:
    from makd_cli.train.moco import train_moco

    return train_moco(cfg)


TASKS: Registry[Task] = Registry("training task")
register_task = TASKS.add
TASKS.add("classify", Task(_classify), "CE on the class logits plus each --method term (ce, lavid, makd, kd, ...)")
TASKS.add("moco", Task(_moco, ("lead-ssl",)), "LEAD's self-supervised MoCo v2 with entropy-weighted distillation; under "
          "torchrun the key encoder sees a batch shuffled across the processes (shuffle-BN), one process has no such shuffle", options=[
    Option("moco-queue", int, 65536, "--method lead-ssl: MoCo v2 queue of negative keys (the paper: 65536).", min=1),
    Option("moco-momentum", float, 0.999, "--method lead-ssl: momentum of the key encoder. Under torchrun the key encoder "
                                          "sees a batch shuffled across the processes (MoCo's shuffle-BN); one process has no "
                                          "such shuffle.", min=0, max=1),
    Option("moco-temperature", float, 0.2, "--method lead-ssl: InfoNCE temperature.", min=0),
    Option("moco-key-updates", int, 1, "--method lead-ssl: momentum updates of the key encoder per step (LEAD++'s code runs its "
                                       "model three times per step, each updating it: 3, i.e. k = m^3 k + (1 - m^3) q).", min=1),
    Option("moco-dim", int, None, "--method lead-ssl: output width of the projection MLP (default 128; with --lead-student "
                                  "text it is the width of the description embeddings, 512 for CLIP ViT-B/16 as in the "
                                  "public code, and another value is an error).", min=1),
    Option("lead-student", str, "text", "--method lead-ssl: the student's distribution. text (LEAD's public code): softmax of "
                                        "the normalised projection . CLIP description embeddings / 0.02 (from the targets file); "
                                        "head: a C-way class head.", choices=("text", "head")),
    Option("lead-kl", str, "reference", "--method lead-ssl: the KL term. reference (the public code): sum over the batch of "
                                        "weight * (1 - H^2) * KL / C; batchmean: weight * mean over the batch of (1 - H^2) * KL.",
           choices=("reference", "batchmean")),
    Option("lead-kl-weight", float, 20.0, "--method lead-ssl: weight of the KL term (the public code's beta, 20).", min=0),
    Option("lead-teacher", str, "online", "--method lead-ssl: online (the public code): CLIP scores the student's own augmented "
                                          "view at every step (loads the CLIP model; its share of the time is logged); offline: "
                                          "the distribution extract --clip stored per un-augmented image.",
           choices=("online", "offline")),
    Option("lead-clip", str, None, "--method lead-ssl --lead-teacher online: the CLIP model (default: the one named in the "
                                   "targets file)."),
])


def _detection(cfg: TrainConfig) -> dict:
    from makd_cli.detection.train import train_detection

    return train_detection(cfg)


TASKS.add("detection", Task(_detection, defaults=SCHEDULE_1X),
          "Faster R-CNN + FPN on --data coco:PATH (--task detection; --method ce, or makd for the aspect head); "
          "defaults: COCO's 1x schedule, 12 epochs, lr 0.02, weight decay 1e-4", options=[
    Option("rois-per-image", int, 512, "--task detection: RoIs sampled per image for the box head's loss "
                                       "(Detectron2's and torchvision's 512; fewer make a step on small images cheaper).", min=1),
    Option("proposals", int, 2000, "--task detection: RPN proposals kept per image after NMS in training "
                                   "(torchvision's 2000).", min=1),
])


def task_name(task: str | None, method: str) -> str:
    """The task a run trains: ``--task`` when given, else the one that owns ``--method``, else ``classify``."""
    if task:
        return task
    return next((e.name for e in TASKS.entries() if method in e.obj.methods), "classify")


def task_for(method: str) -> Task:
    """The task that owns ``--method method``: the one that names it, else ``classify``."""
    return TASKS.get(task_name(None, method))


def task_methods() -> list[str]:
    """``--method`` values owned by a task rather than by the METHODS registry."""
    return sorted(m for e in TASKS.entries() for m in e.obj.methods)
