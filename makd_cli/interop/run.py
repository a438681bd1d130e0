"""The import / export jobs: each takes one config, reads a foreign file, writes makd's, returns a summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.fileio import atomic_write_text, read_text, sha256_file
from makd_cli.formats.questions import read_classes, read_questions, write_questions
from makd_cli.formats.targets import read_targets, write_targets
from makd_cli.interop import lavid

QUESTION_FORMATS = ("lavid",)
TARGET_FORMATS = ("lavid",)
_LATER = {"lavid-images": "the per-image InternVL2 jsonl (lavid-images) is not supported yet"}


def _check_format(fmt: str, known: tuple[str, ...], flag: str) -> None:
    if fmt in _LATER:
        raise MakdError(f"{flag} {fmt}: {_LATER[fmt]}; supported: {', '.join(known)}")
    if fmt not in known:
        raise MakdError(f"{flag} {fmt!r} is unknown; supported: {', '.join(known)}")


@dataclass
class ImportQuestionsConfig:
    source: Path
    output: Path
    fmt: str = "lavid"
    dataset: str | None = None  # LaViD's dataset name (its extra placeholder phrases); default: FILE's folder name


def import_questions(cfg: ImportQuestionsConfig) -> dict:
    _check_format(cfg.fmt, QUESTION_FORMATS, "--from")
    source = Path(cfg.source)
    text = read_text(source, "LaViD question file")
    dataset = cfg.dataset if cfg.dataset is not None else source.resolve().parent.name
    questions, report = lavid.questions_from_text(text, str(source), dataset, source.name)
    write_questions(cfg.output, questions)
    return {**report, "source": str(source), "dataset": dataset, "output": str(cfg.output)}


@dataclass
class ImportTargetsConfig:
    source: Path
    output: Path
    classes: Path
    questions: Path
    fmt: str = "lavid"
    class_map: Path | None = None  # JSON {makd class: LaViD name}
    teacher: str | None = None  # default: lavid:<file stem>


def _read_class_map(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = json.loads(read_text(path, "class map"))
    except json.JSONDecodeError as exc:
        raise MakdError(f"class map {path} is not valid JSON ({exc.msg}); write {{\"makd class\": \"LaViD name\"}}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise MakdError(f"class map {path} must be a JSON object of strings {{\"makd class\": \"LaViD name\"}}")
    return data


def import_targets(cfg: ImportTargetsConfig) -> dict:
    _check_format(cfg.fmt, TARGET_FORMATS, "--from")
    source = Path(cfg.source)
    classes = read_classes(cfg.classes)
    questions = read_questions(cfg.questions, kind="mcq")
    class_map = _read_class_map(cfg.class_map)
    unknown = sorted(k for k in class_map if k not in classes)
    if unknown:
        raise MakdError(f"class map {cfg.class_map} names {len(unknown)} class(es) not in {cfg.classes}: {', '.join(map(repr, unknown))}")
    data = lavid.parse_targets_json(read_text(source, "LaViD targets file"), str(source))
    targets, report = lavid.targets_from_json(
        data, classes, questions, class_map, str(source), teacher=cfg.teacher or f"lavid:{source.stem}",
        questions_sha256=sha256_file(cfg.questions), source={"format": "lavid", "file": source.name, "sha256": sha256_file(source)})
    write_targets(cfg.output, targets)
    return {**report, "source": str(source), "output": str(cfg.output), "teacher": targets.teacher}


@dataclass
class ExportTargetsConfig:
    source: Path
    output: Path
    fmt: str = "lavid"


def export_targets(cfg: ExportTargetsConfig) -> dict:
    _check_format(cfg.fmt, TARGET_FORMATS, "--to")
    t = read_targets(cfg.source)
    text = lavid.targets_to_json(t, str(cfg.source))
    atomic_write_text(cfg.output, text)
    return {"source": str(cfg.source), "output": str(cfg.output), "classes": len(json.loads(text)),
            "questions": len(t.question_ids), "options": int(t.probs.shape[2])}
