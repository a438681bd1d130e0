"""Fashion-MNIST from its original idx files (Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from makd_cli.data.base import DatasetSplits, Split
from makd_cli.data.layout import Layout
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Where `make setup` puts the files: Debian's path when installed as root, else unpacked in the repo.
SEARCH_PATHS = (
    "/usr/share/datasets/fashion-mnist",
    ".data/fashion-mnist/usr/share/datasets/fashion-mnist",
)


def find_root() -> Path | None:
    env = os.environ.get("MAKD_FASHION_MNIST")
    candidates = ([env] if env else []) + list(SEARCH_PATHS)
    repo = Path(__file__).resolve().parents[2]
    for c in candidates:
        for p in (Path(c), repo / c):
            if (p / (FILES["train"][0] + ".gz")).exists() or (p / FILES["train"][0]).exists():
                return p
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): big-endian magic, dims, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise MakdError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise MakdError(f"{path} is truncated: expected {int(np.prod(dims))} bytes of data, found {body.size}")
    return body.reshape(dims)


def _array_split(images: np.ndarray, labels: np.ndarray, prefix: str) -> Split:
    def load(i: int) -> Image.Image:
        return Image.fromarray(images[i], mode="L").convert("RGB")

    return Split([f"{prefix}/{i}" for i in range(len(labels))], labels, load)


@register_dataset("fashion-mnist", help="Fashion-MNIST idx files (installed by `make setup`; or NAME:PATH)",
                  layout=Layout(markers=("train-images-idx3-ubyte|train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte|t10k-labels-idx1-ubyte.gz")))
def load_fashion_mnist(root: Path | None, seed: int = 0) -> DatasetSplits:
    root = root or find_root()
    if root is None:
        raise MakdError(
            "Fashion-MNIST files not found; run `make setup` (installs Debian package dataset-fashion-mnist) "
            "or pass --data fashion-mnist:/path/to/idx/files"
        )
    splits = {}
    for split, (img_name, lab_name) in FILES.items():
        found = []
        for name in (img_name, lab_name):
            p = next((root / f for f in (name + ".gz", name) if (root / f).exists()), None)
            if p is None:
                raise MakdError(f"{root} lacks {name}(.gz); give the folder holding the four Fashion-MNIST idx files")
            found.append(read_idx(p))
        images, labels = found
        splits[split] = _array_split(images, labels.astype(np.int64), split)
    return DatasetSplits("fashion-mnist", list(CLASSES), splits["train"], splits["test"], native_size=28)
