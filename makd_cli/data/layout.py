"""Datasets recognised by their layout: a plain ``--data PATH`` is read by the reader whose native
layout the folder has, not as an ImageFolder of its subfolders.

Each reader declares its layout where it registers (``@register_dataset(..., layout=Layout(...))``):
the marker files every copy of that dataset holds, the subfolders its archive unpacks to, and the
folder names an ImageFolder reading would mistake for classes (CUB's ``images``, Flowers' ``jpg``).
A new dataset plug-in declares its own; nothing here lists datasets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from makd_cli.errors import MakdError


@dataclass(frozen=True)
class Layout:
    """How to tell a dataset's native layout from a folder.

    ``markers``: entries that must all be there (relative to the dataset folder; a trailing "/" means a
    folder; ``a|b`` means either; glob characters are allowed). ``under``: subfolders of the given path
    the dataset folder may be (the archive's own folder, e.g. ``CUB_200_2011``). ``lookalikes``: folder
    names an ImageFolder reading of this layout would take for classes."""

    markers: tuple[str, ...]
    under: tuple[str, ...] = ()
    lookalikes: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # other files the reader reads (inputs no output may overwrite), not needed to recognise it

    def _has(self, folder: Path, marker: str) -> bool:
        for choice in marker.split("|"):
            want_dir = choice.endswith("/")
            name = choice.rstrip("/")
            hits = list(folder.glob(name)) if any(c in name for c in "*?[") else [folder / name]
            if any(h.is_dir() if want_dir else h.is_file() for h in hits):
                return True
        return False

    def find(self, path: Path) -> Path | None:
        """The folder at or under ``path`` that has every marker, or None."""
        path = Path(path)
        for folder in [path, *(path / u for u in self.under)]:
            if folder.is_dir() and all(self._has(folder, m) for m in self.markers):
                return folder
        return None


def _layouts() -> dict[str, Layout]:
    from makd_cli.data.registry import DATASETS, LAYOUTS

    DATASETS.names()  # imports every reader module, so each has declared its layout
    return dict(sorted(LAYOUTS.items()))


def detect_layouts(path: Path) -> list[str]:
    """The names of the registered readers whose native layout ``path`` has."""
    return [name for name, layout in _layouts().items() if layout.find(Path(path)) is not None]


def reader_for_path(path: Path) -> str | None:
    """The reader a plain folder ``path`` is read by: the one native layout it has, None when it has
    none (an ImageFolder), a ``MakdError`` when it has several (the user must say which)."""
    found = detect_layouts(path)
    if len(found) > 1:
        raise MakdError(f"--data {path} has the layouts of several datasets; say which: "
                        + " or ".join(f"--data {name}:{path}" for name in found))
    return found[0] if found else None


def imagefolder_class_names(path: Path) -> list[str]:
    """The class names an ImageFolder reading of ``path`` would give (as ``imagefolder.py`` reads it)."""
    path = Path(path)
    split = path / "train" if (path / "train").is_dir() and any((path / n).is_dir() for n in ("test", "val")) else path
    try:
        return sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return []


def check_imagefolder_classes(path: Path, classes: list[str] | None = None) -> None:
    """Refuse a plain folder whose ImageFolder reading is likely not what was meant: one class, or a
    class named like a native layout's image folder. The message gives the ``NAME:PATH`` forms."""
    classes = imagefolder_class_names(path) if classes is None else classes
    if not classes:
        return  # no class folders: the ImageFolder reader says so itself
    layouts = _layouts()
    named = sorted({name for name, layout in layouts.items() for c in classes if c in layout.lookalikes})
    if named:
        odd = sorted({c for c in classes for n in named if c in layouts[n].lookalikes})
        raise MakdError(f"--data {path}: read as an ImageFolder its class(es) would include {', '.join(map(repr, odd))}, "
                        f"a folder of a dataset's own layout, not a class; if it is one of those, give "
                        + " or ".join(f"--data {n}:{path}" for n in named)
                        + f" (its marker files were not found), or imagefolder:{path} to read it as class folders anyway")
    if len(classes) < 2:
        forms = " or ".join(f"{n}:{path}" for n in layouts)
        raise MakdError(f"--data {path}: read as an ImageFolder it has {len(classes)} class ({', '.join(map(repr, classes))}); "
                        f"a native dataset is given as NAME:PATH ({forms}); an ImageFolder needs one folder per class, "
                        f"or imagefolder:{path} to read it anyway")


def require_classes(ds, spec: str, at_least: int = 2, what: str = "training") -> None:
    """A classifier needs two classes at least: one class trains a model that is always right."""
    if len(ds.classes) < at_least:
        raise MakdError(f"--data {spec} has {len(ds.classes)} class ({', '.join(map(repr, ds.classes))}); {what} needs "
                        f"{at_least} or more (a one-class model scores 100% and learns nothing)")


def dataset_input_paths(spec: str | None) -> list[str]:
    """The paths a ``--data`` value reads: its folder and, for a native layout, its marker files (so an
    output may not be written over them; see ``fileio.check_outputs_distinct``)."""
    if not spec:
        return []
    from makd_cli.data.registry import DATASETS

    name, sep, rest = spec.partition(":")
    path = rest if sep and name in DATASETS else spec
    if not path or not os.path.exists(path):
        return []
    paths = [path]
    layouts = _layouts()
    for layout in ([layouts[name]] if sep and name in layouts else [layouts[n] for n in detect_layouts(Path(path))]):
        folder = layout.find(Path(path))
        if folder is not None:
            for marker in (*layout.markers, *layout.files):
                for choice in marker.split("|"):
                    paths += [str(p) for p in folder.glob(choice.rstrip("/"))] if any(c in choice for c in "*?[") \
                        else [str(folder / choice.rstrip("/"))]
    return paths
