"""Where the command line prints: the consoles and the one JSON-or-rendered switch of ``--json``.

Every console makd prints through reads strings as plain text (no rich markup, no ``:emoji:`` codes):
paths, class names, question texts and error messages are user text, and ``[/]`` or ``[red]`` in one
must print as it is written, not crash the printer or vanish. Styling is given as ``rich.text.Text``
(``bold(...)``, ``styled(...)``), which is never parsed. When an output goes to standard output
(``-o -``), ``out`` prints to standard error instead, so the pipe carries only the file.
"""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.text import Text


def plain_console(**kwargs) -> Console:
    """A rich console that prints user text verbatim: markup and emoji codes off."""
    return Console(markup=False, emoji=False, **kwargs)


class _OutConsole(Console):
    """Standard output, or standard error while standard output carries a file (``-o -``)."""

    @property
    def file(self):
        from makd_cli.fileio import stdout_is_taken

        if self._file is not None:
            return self._file
        return sys.stderr if stdout_is_taken() else sys.stdout

    @file.setter
    def file(self, new_file) -> None:
        self._file = new_file


out = _OutConsole(markup=False, emoji=False)
err = plain_console(stderr=True)


def bold(text) -> Text:
    return Text(str(text), style="bold")


def styled(*parts) -> Text:
    """``Text.assemble``: plain strings and ``(text, style)`` pairs, none of them read as markup."""
    return Text.assemble(*((p if isinstance(p, (tuple, Text)) else str(p)) for p in parts))


def emit(payload: dict, as_json: bool, render) -> None:
    """Print ``payload`` as JSON for scripts (``--json``), else call ``render`` for people."""
    if as_json:
        print(json.dumps(payload, indent=1, default=str), file=out.file)
    else:
        render()
