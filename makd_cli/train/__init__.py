"""Training: ``TrainConfig`` describes a run, ``train(config)`` performs it."""

from makd_cli.train.config import TrainConfig
from makd_cli.train.loop import train

__all__ = ["TrainConfig", "train"]
