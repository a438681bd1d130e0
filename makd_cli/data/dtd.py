"""Describable Textures (47 textures) read with torchvision's ``DTD`` (no download).

Layout (the unpacked dtd-r1.0.1.tar.gz; PATH may be that dtd/ folder, or torchvision's root that
holds dtd/dtd/)::

    dtd/
        images/<texture>/<texture>_<n>.jpg
        labels/train1.txt  labels/val1.txt  labels/test1.txt   "<texture>/<file>.jpg"

Partition 1 is used, train and val together as train (3,760) and test as test (1,880).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from makd_cli.data.base import DatasetSplits, Split, file_loader
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

BASE = "dtd/dtd"  # torchvision looks for <root>/dtd/dtd/
PARTITION = 1
FILES = ("images", f"labels/train{PARTITION}.txt", f"labels/val{PARTITION}.txt", f"labels/test{PARTITION}.txt")
LAYOUT = (
    f"dtd/ holding images/<texture>/*.jpg and labels/train{PARTITION}.txt, val{PARTITION}.txt, "
    f"test{PARTITION}.txt (the unpacked dtd-r1.0.1.tar.gz)"
)


def find_folder(root: Path | None) -> Path:
    if root is None:
        raise MakdError(f"dtd needs a path: --data dtd:/path/to/dtd (expected {LAYOUT})")
    if not root.is_dir():
        raise MakdError(f"DTD folder {root} does not exist (expected {LAYOUT})")
    folder = next((c for c in (root, root / "dtd", root / "dtd" / "dtd") if (c / "labels").is_dir()), root)
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise MakdError(f"DTD: {folder} lacks {', '.join(missing)} (expected {LAYOUT})")
    return folder


@contextmanager
def torchvision_root(folder: Path):
    """A temporary root in which ``BASE`` links to ``folder``, so the folder may have any name."""
    with tempfile.TemporaryDirectory(prefix="makd-dtd-") as tmp:
        link = Path(tmp, BASE)
        link.parent.mkdir(parents=True)
        link.symlink_to(folder.resolve(), target_is_directory=True)
        yield Path(tmp), link


@register_dataset("dtd", help="Describable Textures, partition 1, train+val/test (NAME:PATH to dtd/)")
def load_dtd(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import DTD

    folder = find_folder(root)
    parts = {}
    with torchvision_root(folder) as (tv_root, link):
        for split in ("train", "val", "test"):
            try:
                ds = DTD(tv_root, split=split, partition=PARTITION, download=False)
            except Exception as e:  # malformed label lines: say so in one line
                raise MakdError(f"DTD: cannot read {folder} ({type(e).__name__}: {e}); expected {LAYOUT}")
            rel = [Path(p).relative_to(link) for p in ds._image_files]
            if rel and not (folder / rel[0]).is_file():
                raise MakdError(f"DTD: {folder / rel[0]} (named in labels/{split}{PARTITION}.txt) is missing")
            # torchvision numbers the classes of each split file on its own: keep the names.
            parts[split] = (rel, [ds.classes[t] for t in ds._labels])
    names = sorted({n for _, split_names in parts.values() for n in split_names})
    index = {n: i for i, n in enumerate(names)}

    def make(*split_names: str) -> Split:
        rel = [r for s in split_names for r in parts[s][0]]
        labels = [index[n] for s in split_names for n in parts[s][1]]
        return Split([r.as_posix() for r in rel], labels, file_loader([folder / r for r in rel]))

    classes = [n.replace("_", " ") for n in names]
    return DatasetSplits("dtd", classes, make("train", "val"), make("test"))
