"""Training: ``TrainConfig`` describes a run, ``train(config)`` performs it with the task the config names
(``task=``) or the one that owns its ``--method`` (``train/task.py``: one dispatcher for Python and the CLI)."""

from makd_cli.train.config import TrainConfig


def train(cfg: TrainConfig) -> dict:
    """Train one run: classification (CE + method terms), LEAD's MoCo (``lead-ssl``) or a detector (``task="detection"``)."""
    from makd_cli.train.task import train as train_one

    return train_one(cfg)


__all__ = ["TrainConfig", "train"]
