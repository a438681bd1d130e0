"""One shared rich progress bar style for long jobs (on stderr, so stdout stays machine-readable)."""

from __future__ import annotations

import contextlib

from makd_cli.cli_output import plain_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr = plain_console(stderr=True)  # user text (paths, model names) printed as is


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True):
    """Yield ``advance(n=1, **fields)``; draws nothing when disabled (``--json``)."""
    prog = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}", markup=False),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=stderr, transient=True, disable=not enabled)
    with prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "", completed: int | None = None):
            if completed is not None:
                prog.update(task, completed=completed, info=info)
            else:
                prog.update(task, advance=n, info=info)

        yield advance
