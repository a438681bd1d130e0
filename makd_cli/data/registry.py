"""The dataset registry: ``--data NAME``, ``--data NAME:PATH`` or ``--data PATH`` (an ImageFolder)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from makd_cli.registry import Registry

# Every module of makd_cli/data is imported on first use: a new reader file registers itself.
DATASETS: Registry[Callable[..., "object"]] = Registry("dataset", package="makd_cli.data", kind="dataset")
register_dataset = DATASETS.register
