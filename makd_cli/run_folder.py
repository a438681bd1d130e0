"""What a run folder of ``makd train`` stands for, in one place for ``makd eval`` and ``makd inspect``.

A folder is its ``best.pt``; an interrupted run that has none yet is its ``last.pt``; a multi-seed
run (``--runs N``) is each ``seedK/`` folder in turn, by the same rule.
"""

from __future__ import annotations

from pathlib import Path

from makd_cli.errors import MakdError


def _one(folder: Path) -> Path | None:
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    return None


def run_checkpoints(source: Path) -> list[Path]:
    """The checkpoints ``source`` stands for: itself when a file, else one per run (see module doc)."""
    source = Path(source)
    if not source.is_dir():
        return [source]
    own = _one(source)
    if own is not None:
        return [own]
    seeds = [p for p in (_one(d) for d in sorted(source.glob("seed*")) if d.is_dir()) if p is not None]
    if not seeds:
        raise MakdError(f"{source} holds no best.pt; give a checkpoint or a run folder written by `makd train`")
    return seeds


def checkpoint_path(source: Path) -> Path:
    """The one checkpoint ``source`` stands for (the first seed's for a multi-seed run)."""
    return run_checkpoints(source)[0]
