"""Recorded hashes compared with what is there now.

A run records the sha256 of its targets (``head.targets_sha256``) and a fingerprint of its dataset
(``dataset``: the reader and a hash of its listing). ``check_resume_inputs`` refuses a ``--resume``
whose targets or data changed under the same path (the run would continue on other inputs than it
started on); ``warn_if_targets_changed`` is the one warning ``makd eval`` and ``makd inspect`` print
when the targets they compare a run with are not the ones it was trained on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.fileio import sha256_file, sha256_text


def dataset_record(ds) -> dict:
    """What the run record says about its data: the reader that read it and a sha256 of its listing
    (class names, and each split's image ids and labels). Image bytes are not hashed: a listing that
    stays the same with other pixels is not caught (hashing every image would cost a pass over it)."""
    listing = [list(ds.classes)] + [[list(s.ids), np.asarray(s.labels).tolist()] for s in (ds.train, ds.test)]
    return {"reader": getattr(ds, "reader", "") or ds.name, "sha256": sha256_text(json.dumps(listing))}


def _restart_hint(out) -> str:
    return f"pass --restart to start the run in {out} over (or --overwrite), or give the original file back"


def check_resume_inputs(ckpt: dict, cfg, out) -> None:
    """Refuse ``--resume`` when the targets file or the dataset changed since the run started (the
    settings themselves are compared by the caller). Checkpoints without a record are not compared."""
    recorded = (ckpt.get("head") or {}).get("targets_sha256")
    if recorded and cfg.targets and Path(cfg.targets).is_file() and sha256_file(cfg.targets) != recorded:
        raise MakdError(f"--resume: the targets {cfg.targets} changed since {out} started (sha256 {recorded[:12]} then, "
                        f"{sha256_file(cfg.targets)[:12]} now; new questions or a new extraction); {_restart_hint(out)}")
    data = ckpt.get("dataset")
    if isinstance(data, dict) and data.get("sha256"):
        from makd_cli.data import load_dataset

        now = dataset_record(load_dataset(cfg.data, seed=cfg.seed))
        if now["sha256"] != data["sha256"] or now["reader"] != data.get("reader", now["reader"]):
            raise MakdError(f"--resume: the dataset --data {cfg.data} changed since {out} started (its classes, images or "
                            f"labels differ; read by {data.get('reader')} then, {now['reader']} now); {_restart_hint(out)}")


_WARNED: set[tuple[str, str]] = set()


def warn_if_targets_changed(ckpt: dict, targets_path, where) -> bool:
    """One warning line on stderr when ``targets_path`` is not the file the run ``where`` trained on
    (by sha256); True when it warned. Once per (file, recorded hash) in a process."""
    recorded = (ckpt.get("head") or {}).get("targets_sha256")
    if not recorded or not targets_path or not Path(targets_path).is_file():
        return False
    now = sha256_file(targets_path)
    if now == recorded or (str(targets_path), recorded, now) in _WARNED:
        return False
    _WARNED.add((str(targets_path), recorded, now))  # the seeds of one run share their targets: one line for all
    print(f"makd: warning: {targets_path} is not the targets file {where} was trained on (sha256 {recorded[:12]} then, "
          f"{now[:12]} now); the aspect figures compare the student with the new file", file=sys.stderr)
    return True
