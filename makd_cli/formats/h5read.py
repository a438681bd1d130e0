"""Reading datasets out of an HDF5 file makd did not necessarily write: resolved inside the file only,
sized before they are read, typed, and finite.

An HDF5 file can point elsewhere: an external link (``probs`` read from another file, silently), a soft
link, a virtual dataset mapping other files, or external raw storage. makd's files hold their data
themselves, so each of these is refused. A dataset's header declares its shape: a 6 KB file may declare
hundreds of GiB, which would fail in ``MemoryError`` (or fill memory) when read, so the declared size is
checked against the data the file stores and against the memory this machine has before a byte is read.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

# What a reader asks for: floats (probabilities, logits, embeddings), integers (labels), strings (names).
FLOAT, INTEGER, STRING = "float", "integer", "string"
_KINDS = {FLOAT: "f", INTEGER: "iu", STRING: "OSU"}


class Damaged(Exception):
    """A dataset makd cannot use; its message completes ``{path} is damaged: ...``."""


def available_memory() -> int:
    """Bytes this process could allocate: MemAvailable on Linux, else a generous 64 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 64 << 30


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def dataset(f: h5py.File, name: str) -> h5py.Dataset:
    """The dataset ``name`` stored in ``f`` itself: links out of the file and external storage refused."""
    link = f.get(name, getlink=True)
    if link is None:
        raise Damaged(f"it lacks the {name!r} dataset")
    if isinstance(link, h5py.ExternalLink):
        raise Damaged(f"{name!r} is a link to {link.filename!r}; makd reads data stored in the file itself")
    if isinstance(link, h5py.SoftLink):
        raise Damaged(f"{name!r} is a soft link to {link.path!r}; makd reads data stored in the file itself")
    try:
        obj = f[name]
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise Damaged(f"{name!r} cannot be opened ({str(exc)[:60]})") from None
    if not isinstance(obj, h5py.Dataset):
        raise Damaged(f"{name!r} is a {type(obj).__name__.lower()}, not a dataset")
    if obj.is_virtual:
        raise Damaged(f"{name!r} is a virtual dataset mapping other files; makd reads data stored in the file itself")
    if obj.external:
        raise Damaged(f"{name!r} keeps its data in external file(s) {[str(e[0]) for e in obj.external][:2]}; "
                      "makd reads data stored in the file itself")
    return obj


def read_array(f: h5py.File, name: str, want: str, ndim: tuple[int, ...] | None = None,
               shape: tuple[int | None, ...] | None = None, memory: int | None = None) -> np.ndarray:
    """Read dataset ``name`` as ``want`` (FLOAT, INTEGER or STRING), checking before the read that its
    declared size fits in the file and in memory, and after it that numbers are finite."""
    d = dataset(f, name)
    kind = d.dtype.kind
    if kind not in _KINDS[want]:
        found = {"b": "booleans", "f": "floats", "i": "integers", "u": "integers", "S": "strings", "O": "strings",
                 "U": "strings", "c": "complex numbers"}.get(kind, f"{d.dtype} values")
        raise Damaged(f"{name!r} must hold {want}s, found {found}")
    if ndim is not None and len(d.shape) not in ndim:
        raise Damaged(f"{name!r} has {len(d.shape)} dimensions {d.shape}, not {' or '.join(map(str, ndim))}")
    if shape is not None:
        for axis, (have, need) in enumerate(zip(d.shape, shape)):
            if need is not None and have != need:
                raise Damaged(f"{name!r} has shape {d.shape}; axis {axis} must be {need}")
    count = int(np.prod(d.shape, dtype=np.float64)) if d.shape else 1
    declared = count * max(d.dtype.itemsize, 8 if kind == "O" else 1)
    stored = d.id.get_storage_size()
    if kind != "O" and not d.compression and stored < count * d.dtype.itemsize:
        raise Damaged(f"{name!r} declares {d.shape} ({_gib(declared)}) but the file stores {_gib(stored)} of it")
    limit = (available_memory() if memory is None else memory) // 2
    if declared > limit:
        raise Damaged(f"{name!r} declares {d.shape} ({_gib(declared)}), more than half this machine's free memory")
    try:
        data = d[()]
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        raise Damaged(f"{name!r} cannot be read ({type(exc).__name__}: {str(exc)[:60]})") from None
    data = np.asarray(data)
    if want == STRING:
        return data
    if want == FLOAT and not np.all(np.isfinite(data)):
        raise Damaged(f"{name!r} holds NaN or infinite values")
    if want == INTEGER and data.size and (int(data.max()) > np.iinfo(np.int64).max):
        raise Damaged(f"{name!r} holds integers too large for a label")
    return data


def file_size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
