"""Pieces shared by the readers of datasets in their native (downloaded and unpacked) layouts.

Each reader keeps its own constants (``BASE``, ``FILES``, ``LAYOUT``) and quirks; these helpers
only do what they all do alike: find the folder, give torchvision the root it expects, turn
torchvision's failures into one-line errors, and make a :class:`Split` of image files.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from makd_cli.data.base import Split, file_loader
from makd_cli.errors import MakdError


def _has(folder: Path, entry: str, *, strict: bool) -> bool:
    """Whether ``folder`` holds ``entry``: a folder if it ends in "/", else a file (any entry unless strict)."""
    if entry.endswith("/"):
        return (folder / entry).is_dir()
    return (folder / entry).is_file() if strict else (folder / entry).exists()


def find_native_folder(
    root: Path | None,
    *,
    name: str,
    display: str,
    layout: str,
    marker: str | Sequence[str],
    files: Sequence[str] = (),
    base: str | None = None,
    example: str | None = None,
    under: Sequence[str] | None = None,
    not_found: str | None = None,
) -> Path:
    """The dataset folder at ``root`` or in one of its subfolders ``under``, with every one of ``files``.

    The folder is the first of ``root``, ``root / u`` for each ``u`` in ``under`` (default: ``base``;
    ".." stands for root's parent) that holds ``marker`` (or any of several markers; an entry ending
    in "/" is a folder, any other a file). When none does, ``not_found`` (if given) says so for
    ``root``; otherwise ``root`` itself is checked for ``files`` (entries ending in "/" must be
    folders). ``example`` (default: ``base``) names the folder in the "needs a path" hint. Every
    failure is a one-line :class:`MakdError` ending in "(expected LAYOUT)".
    """
    example = example or base
    under = (base,) if under is None and base else (under or ())
    if root is None:
        raise MakdError(f"{name} needs a path: --data {name}:/path/to/{example} (expected {layout})")
    if not root.is_dir():
        raise MakdError(f"{display} folder {root} does not exist (expected {layout})")
    markers = (marker,) if isinstance(marker, str) else tuple(marker)
    candidates = [root] + [root.parent if u == ".." else root / u for u in under]
    folder = next((c for c in candidates if any(_has(c, m, strict=True) for m in markers)), None)
    if folder is None:
        if not_found is not None:
            raise MakdError(f"{display}: {root} {not_found} (expected {layout})")
        folder = root
    missing = [f for f in files if not _has(folder, f, strict=False)]
    if missing:
        raise MakdError(f"{display}: {folder} lacks {', '.join(missing)} (expected {layout})")
    return folder


@contextmanager
def torchvision_root(folder: Path, base: str, name: str) -> Iterator[tuple[Path, Path]]:
    """A temporary root in which ``base`` links to ``folder``, so the folder may have any name.

    Yields (root, link); ``base`` may have several parts ("dtd/dtd").
    """
    with tempfile.TemporaryDirectory(prefix=f"makd-{name}-") as tmp:
        link = Path(tmp, base)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(folder.resolve(), target_is_directory=True)
        yield Path(tmp), link


def open_torchvision(
    dataset_cls,
    tv_root: Path,
    folder: Path,
    *,
    display: str,
    layout: str,
    explain: Callable[[Exception], str | None] | None = None,
    **kwargs,
):
    """``dataset_cls(tv_root, download=False, **kwargs)``, any failure a one-line :class:`MakdError`.

    ``explain`` may word the error for some exceptions (returning None leaves the generic one).
    """
    try:
        return dataset_cls(tv_root, download=False, **kwargs)
    except Exception as e:  # unreadable or malformed files: say so in one line
        message = explain(e) if explain is not None else None
        raise MakdError(message or f"{display}: cannot read {folder} ({type(e).__name__}: {e}); expected {layout}")


def relative_ids(paths, link: Path) -> list[str]:
    """torchvision's image paths under ``link`` as ids relative to the dataset folder."""
    return [Path(p).relative_to(link).as_posix() for p in paths]


def check_first_file(folder: Path, ids: Sequence[str], *, display: str, missing: str) -> None:
    """Fail with "DISPLAY: PATH MISSING" unless the first id is a file (a cheap check of the layout)."""
    if ids and not (folder / ids[0]).is_file():
        raise MakdError(f"{display}: {folder / ids[0]} {missing}")


def native_split(
    folder: Path,
    ids: Sequence[str],
    labels,
    *,
    display: str | None = None,
    missing: str | None = None,
    groups=None,
    fine_labels=None,
) -> Split:
    """A :class:`Split` of the images ``folder / id``; checks the first one first when ``missing`` is given."""
    if missing is not None:
        check_first_file(folder, ids, display=display, missing=missing)
    return Split(list(ids), labels, file_loader([folder / i for i in ids]), groups=groups, fine_labels=fine_labels)
