"""Resumable extraction: finished units (a class, a question, a chunk of images) are saved one file
each in ``<out>.partial/``, written atomically, so kill -9 loses at most the unit in progress.

The folder carries a fingerprint of everything that determines the result; a run with other
inputs refuses to mix its results in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.fileio import atomic_path, atomic_write_text, write_error


class ResumeStore:
    def __init__(self, out: str | Path, fingerprint: dict, restart: bool = False):
        self.dir = Path(str(out) + ".partial")
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
        fp_file = self.dir / "fingerprint.json"
        if restart and self.dir.exists():
            shutil.rmtree(self.dir)
        if self.dir.exists() and fp_file.exists():
            old = self._read_fingerprint(fp_file)
            if old != self.fingerprint:
                changed = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
                raise MakdError(
                    f"{self.dir} holds an unfinished run with other inputs ({', '.join(changed)} differ); "
                    "pass --restart to discard it, or repeat the original command"
                )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise (write_error(self.dir, exc) or MakdError(f"cannot create {self.dir}: {exc}")) from None
        atomic_write_text(fp_file, json.dumps(self.fingerprint, sort_keys=True, indent=1))

    def _damaged(self, path: Path, why: str) -> MakdError:
        return MakdError(f"{path} is damaged ({why}); pass --restart to discard the unfinished run in {self.dir}")

    def _read_fingerprint(self, fp_file: Path) -> dict:
        from makd_cli.fileio import read_text
        from makd_cli.jsonio import loads

        try:  # the shared readers: UTF-8, bounded depth, no NaN
            old = loads(read_text(fp_file, "fingerprint"), str(fp_file))
        except MakdError as exc:
            raise self._damaged(fp_file, str(exc).replace(str(fp_file), "").strip(" :;")[:80]) from None
        if not isinstance(old, dict):
            raise self._damaged(fp_file, "not a JSON object")
        return old

    def _file(self, key: str) -> Path:
        return self.dir / f"unit-{key}.npz"

    def done(self, key: str) -> bool:
        return self._file(key).exists()

    def save(self, key: str, **arrays: np.ndarray) -> None:
        with atomic_path(self._file(key), suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    def load(self, key: str) -> dict[str, np.ndarray]:
        path = self._file(key)
        try:  # allow_pickle stays False: a unit holds arrays only
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except BaseException as exc:  # zip, pickle and EOF errors of a truncated or foreign file
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise self._damaged(path, type(exc).__name__) from None

    def load_checked(self, key: str, **shapes: tuple) -> dict[str, np.ndarray]:
        """``load`` and check each named array's shape (None in a shape matches any length)."""
        arrays = self.load(key)
        for name, shape in shapes.items():
            a = arrays.get(name)
            if a is None or a.ndim != len(shape) or any(w is not None and w != h for w, h in zip(shape, a.shape)):
                raise self._damaged(self._file(key), f"{name} has shape {None if a is None else a.shape}, expected {shape}")
            if a.dtype.kind not in "fiub":
                raise self._damaged(self._file(key), f"{name} is not numeric")
        return arrays

    def finished_units(self) -> int:
        return len(list(self.dir.glob("unit-*.npz")))

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
