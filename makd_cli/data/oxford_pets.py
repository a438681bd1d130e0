"""Oxford-IIIT Pet (37 cat and dog breeds) read with torchvision's ``OxfordIIITPet`` (no download).

Layout (the two archives unpacked side by side; the folder may have any name, torchvision calls it
oxford-iiit-pet; PATH may be it or the folder holding it)::

    oxford-iiit-pet/
        images/<Breed_name>_<n>.jpg
        annotations/trainval.txt   "<image> <class 1-37> <species> <breed id>"
        annotations/test.txt

The official split is used: trainval (3,680) as train, test (3,669) as test. Class names are
torchvision's ("American Bulldog", "Abyssinian").
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from makd_cli.data.base import DatasetSplits, Split, file_loader
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

BASE = "oxford-iiit-pet"
FILES = ("images", "annotations/trainval.txt", "annotations/test.txt")
LAYOUT = (
    "oxford-iiit-pet/ holding images/*.jpg and annotations/trainval.txt, annotations/test.txt "
    "(images.tar.gz and annotations.tar.gz unpacked side by side)"
)


def find_folder(root: Path | None) -> Path:
    if root is None:
        raise MakdError(f"pets needs a path: --data pets:/path/to/oxford-iiit-pet (expected {LAYOUT})")
    if not root.is_dir():
        raise MakdError(f"Oxford-IIIT Pet folder {root} does not exist (expected {LAYOUT})")
    folder = next((c for c in (root, root / BASE) if (c / "annotations").is_dir()), root)
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise MakdError(f"Oxford-IIIT Pet: {folder} lacks {', '.join(missing)} (expected {LAYOUT})")
    return folder


@contextmanager
def torchvision_root(folder: Path):
    """A temporary root in which ``BASE`` links to ``folder``, so the folder may have any name."""
    with tempfile.TemporaryDirectory(prefix="makd-pets-") as tmp:
        link = Path(tmp, BASE)
        link.symlink_to(folder.resolve(), target_is_directory=True)
        yield Path(tmp), link


@register_dataset("pets", help="Oxford-IIIT Pet, trainval/test (NAME:PATH to oxford-iiit-pet/)")
def load_pets(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import OxfordIIITPet

    folder = find_folder(root)
    datasets = {}
    with torchvision_root(folder) as (tv_root, link):
        for split in ("trainval", "test"):
            try:
                datasets[split] = OxfordIIITPet(tv_root, split=split, download=False)
            except Exception as e:  # malformed annotation lines: say so in one line
                raise MakdError(f"Oxford-IIIT Pet: cannot read {folder} ({type(e).__name__}: {e}); expected {LAYOUT}")
        # torchvision names classes per split; take the names from trainval, which holds every breed.
        classes = list(datasets["trainval"].classes)
        splits = {}
        for split, ds in datasets.items():
            rel = [Path(p).relative_to(link) for p in ds._images]
            labels = [int(t) for t in ds._labels]
            if labels and not (0 <= min(labels) and max(labels) < len(classes)):
                raise MakdError(f"Oxford-IIIT Pet: annotations/{split}.txt has classes missing from trainval.txt")
            if rel and not (folder / rel[0]).is_file():
                raise MakdError(f"Oxford-IIIT Pet: {folder / rel[0]} is missing; expected {LAYOUT}")
            splits[split] = Split([r.as_posix() for r in rel], labels, file_loader([folder / r for r in rel]))
    return DatasetSplits("pets", classes, splits["trainval"], splits["test"])
