"""The dataset registry: ``--data NAME``, ``--data NAME:PATH`` or ``--data PATH`` (an ImageFolder)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from makd_cli.registry import Registry

DATASETS: Registry[Callable[..., "object"]] = Registry("dataset")
register_dataset = DATASETS.register
