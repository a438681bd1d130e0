"""Where the command line prints: the consoles and the one JSON-or-rendered switch of ``--json``."""

from __future__ import annotations

import json

from rich.console import Console

out = Console()
err = Console(stderr=True)


def emit(payload: dict, as_json: bool, render) -> None:
    """Print ``payload`` as JSON for scripts (``--json``), else call ``render`` for people."""
    if as_json:
        print(json.dumps(payload, indent=1, default=str))
    else:
        render()
