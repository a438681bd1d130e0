"""Datasets: a registry of readers (one file each) plus splitting and transforms.

Add a dataset by writing one module that decorates its loader with ``@register_dataset``; the
registry finds it (every module of this package is imported on first use).
"""

from __future__ import annotations

from pathlib import Path

from makd_cli.data.base import DatasetSplits, Split
from makd_cli.data.registry import DATASETS, register_dataset
from makd_cli.errors import MakdError


def load_dataset(spec: str, seed: int = 0) -> DatasetSplits:
    """Resolve ``--data``: a registered name, ``name:path``, or a path to an ImageFolder."""
    name, _, path = spec.partition(":")
    if name in DATASETS:
        ds = DATASETS.get(name)(Path(path) if path else None, seed=seed)
    elif Path(spec).exists():
        ds = DATASETS.get("imagefolder")(Path(spec), seed=seed)
    else:
        raise MakdError(
            f"--data {spec!r} is neither a known dataset ({', '.join(DATASETS.names())}) nor an existing folder"
        )
    if len(ds.train) == 0 or len(ds.test) == 0:
        raise MakdError(f"dataset {spec} has an empty train or test split")
    return ds


__all__ = ["DATASETS", "DatasetSplits", "Split", "load_dataset", "register_dataset"]
