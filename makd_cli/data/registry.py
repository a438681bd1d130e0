"""The dataset registry: ``--data NAME``, ``--data NAME:PATH`` or ``--data PATH`` (a folder in a native
layout a reader declares, else an ImageFolder)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from makd_cli.registry import Registry

if TYPE_CHECKING:  # data/layout.py reads this registry: the type alone comes back
    from makd_cli.data.layout import Layout

# Every module of makd_cli/data is imported on first use: a new reader file registers itself.
DATASETS: Registry[Callable[..., "object"]] = Registry("dataset", package="makd_cli.data", kind="dataset")
LAYOUTS: dict[str, Layout] = {}  # reader name -> the native layout it declared (data/layout.py: Layout)


def register_dataset(name: str, help: str = "", options=(), *, layout: Layout | None = None):
    """``@register_dataset("cub", help=..., layout=Layout(markers=("images.txt", ...)))``: a reader, and
    the layout by which a plain ``--data PATH`` is recognised as its dataset."""
    if layout is not None:
        LAYOUTS[name] = layout
    return DATASETS.register(name, help, options)
