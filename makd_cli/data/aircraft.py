"""FGVC-Aircraft (100 aircraft variants) read with torchvision's ``FGVCAircraft`` (no download).

Layout (the unpacked fgvc-aircraft-2013b.tar.gz; PATH may be that folder or the folder holding it)::

    fgvc-aircraft-2013b/data/
        variants.txt                     one class name a line
        images_variant_trainval.txt      "<image id> <variant>"
        images_variant_test.txt
        images/<image id>.jpg

Variant level, official split: trainval (6,667) as train, test (3,333) as test. Images keep the
20-pixel copyright banner at their bottom, as torchvision reads them.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from makd_cli.data.base import DatasetSplits, Split, file_loader
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

BASE = "fgvc-aircraft-2013b"
FILES = (
    "data/variants.txt",
    "data/images_variant_trainval.txt",
    "data/images_variant_test.txt",
    "data/images",
)
LAYOUT = (
    "fgvc-aircraft-2013b/data/ holding variants.txt, images_variant_trainval.txt, "
    "images_variant_test.txt and images/*.jpg (the unpacked fgvc-aircraft-2013b.tar.gz)"
)


def find_folder(root: Path | None) -> Path:
    if root is None:
        raise MakdError(f"aircraft needs a path: --data aircraft:/path/to/fgvc-aircraft-2013b (expected {LAYOUT})")
    if not root.is_dir():
        raise MakdError(f"FGVC-Aircraft folder {root} does not exist (expected {LAYOUT})")
    folder = next((c for c in (root, root / BASE) if (c / "data").is_dir()), root)
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise MakdError(f"FGVC-Aircraft: {folder} lacks {', '.join(missing)} (expected {LAYOUT})")
    return folder


@contextmanager
def torchvision_root(folder: Path):
    """A temporary root in which ``BASE`` links to ``folder``, so the folder may have any name."""
    with tempfile.TemporaryDirectory(prefix="makd-aircraft-") as tmp:
        link = Path(tmp, BASE)
        link.symlink_to(folder.resolve(), target_is_directory=True)
        yield Path(tmp), link


@register_dataset("aircraft", help="FGVC-Aircraft variants, trainval/test (NAME:PATH to fgvc-aircraft-2013b/)")
def load_aircraft(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import FGVCAircraft

    folder = find_folder(root)
    splits, classes = {}, None
    with torchvision_root(folder) as (tv_root, link):
        for split in ("trainval", "test"):
            try:
                ds = FGVCAircraft(tv_root, split=split, annotation_level="variant", download=False)
            except KeyError as e:
                raise MakdError(
                    f"FGVC-Aircraft: images_variant_{split}.txt names variant {e} missing from variants.txt"
                )
            except Exception as e:  # malformed lists: say so in one line
                raise MakdError(f"FGVC-Aircraft: cannot read {folder} ({type(e).__name__}: {e}); expected {LAYOUT}")
            classes = classes or [c.replace("_", " ") for c in ds.classes]
            rel = [Path(p).relative_to(link) for p in ds._image_files]
            if rel and not (folder / rel[0]).is_file():
                raise MakdError(f"FGVC-Aircraft: {folder / rel[0]} is missing; expected {LAYOUT}")
            splits[split] = Split([r.as_posix() for r in rel], ds._labels, file_loader([folder / r for r in rel]))
    return DatasetSplits("aircraft", classes, splits["trainval"], splits["test"])
