"""Oxford 102 Flowers (102 flower species) from its native files, in torchvision's layout.

Layout (PATH may be the folder or torchvision's root holding flowers-102/)::

    flowers-102/
        jpg/image_00001.jpg ...   (the unpacked 102flowers.tgz)
        imagelabels.mat           labels: class (1-102) of image i at position i-1
        setid.mat                 trnid, valid, tstid: image numbers of each split

The official split is used with train and val together as train (2,040) and test as test (6,149).
The .mat files are read here with scipy rather than through torchvision's ``Flowers102``, which
also insists on the md5 sums of the original downloads. Class names are torchvision's list
("pink primrose", ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from makd_cli.data.base import DatasetSplits, Split
from makd_cli.data.native import find_native_folder, native_split
from makd_cli.data.layout import Layout
from makd_cli.data.registry import register_dataset
from makd_cli.errors import MakdError

BASE = "flowers-102"
FILES = ("jpg", "imagelabels.mat", "setid.mat")
LAYOUT = (
    "flowers-102/ holding jpg/image_00001.jpg, ..., imagelabels.mat and setid.mat "
    "(torchvision's Flowers102 layout)"
)


def _load_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True)
    except Exception as e:  # not a .mat file: say so in one line
        raise MakdError(f"Flowers-102: cannot read {path} ({type(e).__name__}: {e})")
    missing = [k for k in keys if k not in mat]
    if missing:
        raise MakdError(f"Flowers-102: {path} lacks the variable(s) {', '.join(missing)}")
    return {k: np.atleast_1d(np.asarray(mat[k])).astype(np.int64).ravel() for k in keys}


@register_dataset("flowers", help="Oxford 102 Flowers, train+val/test (NAME:PATH to flowers-102/)",
                  layout=Layout(markers=("setid.mat", "imagelabels.mat"), under=(BASE,), lookalikes=("jpg",)))
def load_flowers(root: Path | None, seed: int = 0) -> DatasetSplits:
    from torchvision.datasets import Flowers102

    folder = find_native_folder(
        root, name="flowers", display="Flowers-102", layout=LAYOUT, marker="setid.mat", files=FILES, base=BASE
    )
    labels = _load_mat(folder / "imagelabels.mat", ("labels",))["labels"] - 1  # image i -> labels[i - 1]
    sets = _load_mat(folder / "setid.mat", ("trnid", "valid", "tstid"))
    names = list(Flowers102.classes)
    if labels.size == 0 or labels.min() < 0 or labels.max() >= len(names):
        raise MakdError(f"Flowers-102: {folder / 'imagelabels.mat'} holds labels outside 1..{len(names)}")
    # All 102 names for the real data; a smaller copy (labels 1..k) gets the first k names.
    classes = names[: int(labels.max()) + 1]

    def make(*keys: str) -> Split:
        numbers = np.concatenate([sets[k] for k in keys])
        if numbers.size and (numbers.min() < 1 or numbers.max() > labels.size):
            raise MakdError(f"Flowers-102: setid.mat names images outside 1..{labels.size} of imagelabels.mat")
        ids = [f"jpg/image_{n:05d}.jpg" for n in numbers]
        missing = f"is missing; expected {LAYOUT}"
        return native_split(folder, ids, labels[numbers - 1], display="Flowers-102", missing=missing)

    return DatasetSplits("flowers", classes, make("trnid", "valid"), make("tstid"))
