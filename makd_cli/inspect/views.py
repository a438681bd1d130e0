"""The view registry and what every view receives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console

from makd_cli.registry import Registry


@dataclass
class ViewRequest:
    source: Path  # targets.h5, a checkpoint, or a run folder
    output: Path | None  # picture to write (.png/.svg/.pdf) or None
    console: Console
    question: str | None = None
    class_name: str | None = None
    top: int | None = None
    questions: Path | None = None  # questions.jsonl for texts and options
    terminal: bool = True
    as_json: bool = False
    options: dict | None = None  # view-specific extras (data, images, ...)


# A view returns a JSON-serialisable dict of what it showed (printed with --json).
# Every module of makd_cli/inspect is imported on first use: a new view file registers itself.
VIEWS: Registry[Callable[[ViewRequest], dict]] = Registry("view", package="makd_cli.inspect", kind="view")
register_view = VIEWS.register


def save_figure(fig, path: Path) -> None:
    """Save by the extension given (.png, .svg, .pdf), atomically."""
    from makd_cli.errors import MakdError
    from makd_cli.fileio import atomic_path

    ext = path.suffix.lower().lstrip(".")
    if ext not in ("png", "svg", "pdf"):
        raise MakdError(f"{path}: pictures are written as .png, .svg or .pdf")
    with atomic_path(path, suffix="." + ext) as tmp:
        fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
