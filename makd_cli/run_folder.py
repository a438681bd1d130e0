"""What a run folder of ``makd train`` stands for, in one place for ``makd eval`` and ``makd inspect``.

A folder is its ``best.pt``; an interrupted run that has none yet is its ``last.pt``; a multi-seed
run (``--runs N``) is each ``seedK/`` folder in turn, by the same rule. A folder is one run or
``seedK/`` runs, never both: ``check_run_folder`` refuses a ``makd train`` that would mix them, or
write over a run that is there, unless ``--resume`` continues it or ``--overwrite`` / ``--restart``
replaces it.
"""

from __future__ import annotations

import contextlib
import os
import re
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
    refuse_mixed_run_folder(source)
    own = _one(source)
    seeds = [p for p in (_one(d) for d in sorted(source.glob("seed*")) if d.is_dir()) if p is not None]
    if own is not None:
        return [own]
    if not seeds:
        raise MakdError(f"{source} holds no best.pt; give a checkpoint or a run folder written by `makd train`")
    return seeds


def refuse_mixed_run_folder(source: Path) -> None:
    """A folder holding both a run and seedN/ runs (written before makd refused to mix them) is
    ambiguous to every reader: say which is meant instead of silently reading one."""
    single, seeds = run_files(source), seed_runs(source)
    if single and seeds:
        raise MakdError(f"{source} holds both a run ({_listing(single)}) and seed runs ({_listing([d.name + '/' for d in seeds])}); "
                        f"give {Path(source) / single[0]} or a seed folder ({seeds[0]}) itself")


def checkpoint_path(source: Path) -> Path:
    """The one checkpoint ``source`` stands for (the first seed's for a multi-seed run)."""
    return run_checkpoints(source)[0]


RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl")  # what `makd train` writes into a run folder
_SEED_FOLDER = re.compile(r"^seed\d+$")


def run_files(folder: Path) -> list[str]:
    """The run files (``RUN_FILES``) ``folder`` holds directly: non-empty when it is (or was) one run."""
    return [name for name in RUN_FILES if (Path(folder) / name).is_file()]


def seed_runs(folder: Path) -> list[Path]:
    """The ``seedK/`` folders of ``folder`` that hold a run (``--runs N``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((d for d in folder.iterdir() if _SEED_FOLDER.match(d.name) and d.is_dir() and run_files(d)),
                  key=lambda d: int(d.name[4:]))


def _listing(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_run_folder(out: Path, *, runs: int = 1, resume: bool = False, fresh: bool = False) -> None:
    """Refuse, before any work, a ``makd train -o OUT`` that would write over a run or mix one run with
    ``seedK/`` runs. ``fresh`` (``--overwrite`` / ``--restart``) replaces what is there instead: the
    run files are removed (``clear_run_folder``), other files are left alone."""
    out = Path(out)
    if resume and fresh:
        raise MakdError("--resume continues the run in -o; --overwrite / --restart start it over: give one of them")
    if not out.is_dir():
        return  # nothing there yet (a file at -o is the run's own error)
    single, seeds = run_files(out), seed_runs(out)
    if not single and not seeds:
        return
    if fresh:
        clear_run_folder(out)
        return
    seed_names = [f"{d.name}/" for d in seeds]
    if single and seeds:
        raise MakdError(f"{out} holds both a run ({_listing(single)}) and seed runs ({_listing(seed_names)}); "
                        "a run folder is one or the other: choose another -o, or --overwrite to replace them all")
    if runs == 1 and seeds:
        raise MakdError(f"{out} holds {len(seeds)} seed run(s) of --runs ({_listing(seed_names)}); a single run would sit "
                        f"beside them{' (resume them with --runs N --resume)' if resume else ''}: choose another -o, "
                        "or --overwrite to replace them")
    if runs > 1 and single:
        raise MakdError(f"{out} holds a single run ({_listing(single)}); --runs {runs} writes seedK/ folders, which would sit "
                        "beside it: choose another -o, or --overwrite to replace it")
    if resume:
        return  # continuing it: the run itself checks that last.pt is there and its settings are the same
    where = f"{out}" if single else f"{out} ({_listing(seed_names)})"
    held = _listing(single or sorted({f for d in seeds for f in run_files(d)}))
    raise MakdError(f"{where} already holds a run ({held}); pass --resume to continue it, --overwrite to replace it, "
                    "or choose another -o")


def clear_run_folder(out: Path) -> list[Path]:
    """Remove the run files of ``out`` and of its ``seedK/`` runs, with their prediction caches (and a
    seed folder left empty); returns what was removed. Each folder is cleared under its run lock, so a
    job still training there is not pulled from under (it stops the one clearing with one line)."""
    from makd_cli.fileio import output_lock

    removed: list[Path] = []
    for folder in [Path(out), *seed_runs(out)]:
        if not run_files(folder):
            continue
        with output_lock(folder / "last.pt", "run"):
            for path in [*(folder / n for n in RUN_FILES), *folder.glob(".eval-*.npz")]:
                if path.is_file():
                    path.unlink()
                    removed.append(path)
        if folder != Path(out):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty: a user's own files keep it
    return removed
