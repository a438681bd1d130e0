"""The paths each writing job reads and writes, by flag, for ``fileio.check_outputs_distinct``.

A job calls ``check_outputs_distinct(INPUTS, OUTPUTS)`` once, before any work; the jobs whose inputs
are many or derived (a dataset's marker files, a run folder's checkpoints) take them from here, so
the call stays one line where the job is.
"""

from __future__ import annotations

import os
from pathlib import Path

from makd_cli.errors import MakdError


def _data(spec: str | None) -> list[str]:
    from makd_cli.data.layout import dataset_input_paths

    return dataset_input_paths(spec)


def _existing(value) -> str | None:
    """A model flag (``--llm``) names a file only sometimes (an alias or a hub id otherwise)."""
    return str(value) if value and os.path.exists(str(value)) else None


def extract_inputs(cfg) -> dict:
    return {"--questions": cfg.questions, "--classes": cfg.classes, "--data": _data(cfg.data), "--mmproj": cfg.mmproj,
            "--llm": _existing(cfg.llm), "--mllm": _existing(cfg.mllm), "--clip": _existing(cfg.clip)}


def import_targets_inputs(cfg) -> dict:
    return {"SOURCE": cfg.source, "--classes": cfg.classes, "--questions": cfg.questions, "--class-map": cfg.class_map,
            "--data": _data(cfg.data)}


def _run_checkpoints(folder: Path) -> list[Path]:
    from makd_cli.run_folder import RUN_FILES, seed_runs

    return [p for d in [folder, *seed_runs(folder)] for p in (d / n for n in RUN_FILES)]


def inspect_inputs(cfg) -> dict:
    opts = cfg.options or {}
    source = Path(cfg.source)
    images = [i for i in opts.get("images") or [] if not str(i).isdigit()]  # an index names a test image, not a file
    return {"SOURCE": [source, *(_run_checkpoints(source) if source.is_dir() else [])], "--questions": cfg.questions,
            "--compare": list(opts.get("compare") or []), "--targets": opts.get("targets"), "--image": images,
            "--data": _data(opts.get("data"))}


def _read_as_class_folders(spec: str, folder: str, out: Path) -> bool:
    """Whether ``--data`` is read as class folders (an ImageFolder) other than ``out``'s own: a run
    folder written into it changes it."""
    from makd_cli.data.layout import detect_layouts, imagefolder_class_names
    from makd_cli.data.registry import DATASETS

    name, sep, _ = spec.partition(":")
    if sep and name in DATASETS and name != "imagefolder":
        return False  # a native reader reads its own files, not what sits beside them
    # a folder without class folders is no ImageFolder yet: its reader says what is wrong with it
    own = Path(os.path.relpath(os.path.realpath(out), os.path.realpath(folder))).parts[:1]
    others = [c for c in imagefolder_class_names(Path(folder)) if (c,) != own]
    return bool(others) and (bool(sep) or not detect_layouts(Path(folder)))


def train_paths(cfg, runs: int = 1) -> tuple[dict, dict]:
    """(inputs, outputs) of ``makd train``: the run folder's files (and seedK/ folders) are its outputs.
    A run folder inside a dataset read as class folders (it would gain a class) is refused here too."""
    out = Path(cfg.out)
    folders = [out] if runs == 1 else [out, *(out / f"seed{cfg.seed + k}" for k in range(runs))]
    from makd_cli.run_folder import RUN_FILES

    outputs = {"-o": [p for d in folders for p in (d, *(d / n for n in RUN_FILES))]}
    data = _data(cfg.data)
    if data and os.path.isdir(data[0]):
        root, real_out = os.path.realpath(data[0]), os.path.realpath(out)
        inside = real_out != root and real_out.startswith(root.rstrip(os.sep) + os.sep)
        if inside and _read_as_class_folders(cfg.data, data[0], out):
            raise MakdError(f"-o {out} is inside the dataset folder --data {data[0]}: the run would become part of the data "
                            "(an ImageFolder would gain a class); write the run elsewhere (nothing was written)")
    inputs = {"--targets": cfg.targets, "--teacher-ckpt": cfg.teacher_ckpt, "--pretrained": _existing(cfg.pretrained),
              "--data": data}
    return inputs, outputs
