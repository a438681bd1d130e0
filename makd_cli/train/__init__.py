"""Training: ``TrainConfig`` describes a run, ``train(config)`` performs it with the task that owns ``--method``."""

from makd_cli.train.config import TrainConfig


def train(cfg: TrainConfig) -> dict:
    """Train one run: CE + method terms (``train/loop.py``), or LEAD's MoCo for ``--method lead-ssl``."""
    from makd_cli.train.tasks import task_for

    return task_for(cfg.method).run(cfg)


__all__ = ["TrainConfig", "train"]
