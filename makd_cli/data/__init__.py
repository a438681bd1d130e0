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
    """Resolve ``--data``: a registered name, ``name:path``, or a path: read by the reader whose native
    layout it has (``data/layout.py``), else as an ImageFolder, refused when that reading looks wrong
    (one class, or a class named like a layout's image folder)."""
    from makd_cli.data.layout import check_imagefolder_classes, reader_for_path

    name, _, path = spec.partition(":")
    if name in DATASETS:
        ds = DATASETS.get(name)(Path(path) if path else None, seed=seed)
        ds.reader = name
    elif Path(spec).exists():
        reader = reader_for_path(Path(spec)) or "imagefolder"
        if reader == "imagefolder":
            check_imagefolder_classes(Path(spec))  # before reading: a misread native layout may not even load
        try:
            ds = DATASETS.get(reader)(Path(spec), seed=seed)
        except MakdError as exc:
            if reader == "imagefolder":
                raise
            raise MakdError(f"{exc} (--data {spec} was read as {reader}:{spec}, as it has that dataset's marker files; "
                            f"give imagefolder:{spec} to read it as class folders)") from None
        ds.reader = reader
    else:
        raise MakdError(
            f"--data {spec!r} is neither a known dataset ({', '.join(DATASETS.names())}) nor an existing folder"
        )
    if len(ds.train) == 0 or len(ds.test) == 0:
        raise MakdError(f"dataset {spec} has an empty train or test split")
    return ds


__all__ = ["DATASETS", "DatasetSplits", "Split", "load_dataset", "register_dataset"]
