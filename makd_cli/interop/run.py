"""The import / export jobs: each takes one config, reads a foreign file, writes makd's, returns a summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.jsonio import loads
from makd_cli.fileio import atomic_write_text, check_output_path, check_outputs_distinct, read_text, sha256_file
from makd_cli.formats.questions import read_classes, read_questions, write_questions
from makd_cli.formats.targets import read_targets, write_targets
from makd_cli.interop import lavid
from makd_cli.job_paths import import_targets_inputs

QUESTION_FORMATS = ("lavid", "makd")
TARGET_FORMATS = ("lavid", "lavid-images")
_LATER: dict[str, str] = {}


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
    check_outputs_distinct({"SOURCE": source}, {"-o": cfg.output})
    text = read_text(source, "question file")
    dataset = cfg.dataset if cfg.dataset is not None else source.resolve().parent.name
    if cfg.fmt == "makd":
        questions, report = lavid.questions_from_lines(text, str(source), source.name)
        dataset = None
    else:
        questions, report = lavid.questions_from_text(text, str(source), dataset, source.name)
    write_questions(cfg.output, questions)
    return {**report, "source": str(source), "dataset": dataset, "output": str(cfg.output)}


@dataclass
class ImportTargetsConfig:
    source: Path
    output: Path
    classes: Path | None  # lavid: the class list (required); lavid-images: the dataset gives the classes
    questions: Path
    fmt: str = "lavid"
    class_map: Path | None = None  # JSON {makd class: LaViD name}
    data: str | None = None  # lavid-images: the dataset (NAME:PATH) whose images the rows belong to
    split: str = "train"  # lavid-images: which split's images
    teacher: str | None = None  # default: lavid:<file stem>


def _read_class_map(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    data = loads(read_text(path, "class map"), f"class map {path}")
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise MakdError(f"class map {path} must be a JSON object of strings {{\"makd class\": \"LaViD name\"}}")
    return data


def import_targets(cfg: ImportTargetsConfig) -> dict:
    _check_format(cfg.fmt, TARGET_FORMATS, "--from")
    check_output_path(cfg.output, "targets file")  # HDF5: `-o -` refused before any work
    source = Path(cfg.source)
    check_outputs_distinct(import_targets_inputs(cfg), {"-o": cfg.output})
    if cfg.fmt == "lavid-images":
        return _import_image_targets(cfg, source)
    if cfg.classes is None:
        raise MakdError("--from lavid needs --classes (the dataset's class list, `makd data classes`)")
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


def _import_image_targets(cfg: ImportTargetsConfig, source: Path) -> dict:
    from makd_cli.data import load_dataset

    if cfg.data is None:
        raise MakdError("--from lavid-images needs --data NAME:PATH (the dataset whose images the file describes)")
    if cfg.split not in ("train", "test"):
        raise MakdError(f"--split {cfg.split!r}: choose train or test")
    if source.suffix == ".jsonl":
        raise MakdError(f"{source}: the layout of LaViD's .jsonl per-image files is not known to makd; give the .json form "
                        "{image file name: [p(yes) per question]} that the reference's training code reads")
    questions = read_questions(cfg.questions, kind="yesno")
    text = read_text(source, "LaViD per-image targets file")
    data = lavid.load_json_object(text, str(source), "{image file name: [p(yes) per question]}")
    ds = load_dataset(cfg.data)
    split = ds.train if cfg.split == "train" else ds.test
    targets, report = lavid.image_targets_from_json(
        data, split.ids, split.labels, ds.classes, [q.id for q in questions], str(source),
        teacher=cfg.teacher or f"lavid:{source.stem}", questions_sha256=sha256_file(cfg.questions),
        source={"format": "lavid-images", "file": source.name, "sha256": sha256_file(source), "split": cfg.split})
    write_targets(cfg.output, targets)
    return {**report, "classes": len(ds.classes), "source": str(source), "output": str(cfg.output), "teacher": targets.teacher}


@dataclass
class ExportTargetsConfig:
    source: Path
    output: Path
    fmt: str = "lavid"


def export_targets(cfg: ExportTargetsConfig) -> dict:
    _check_format(cfg.fmt, TARGET_FORMATS, "--to")
    check_outputs_distinct({"SOURCE": cfg.source}, {"-o": cfg.output})
    t = read_targets(cfg.source)
    if cfg.fmt == "lavid-images":
        text = lavid.image_targets_to_json(t, str(cfg.source))
        atomic_write_text(cfg.output, text)
        return {"source": str(cfg.source), "output": str(cfg.output), "images": len(t.images), "questions": len(t.question_ids)}
    text = lavid.targets_to_json(t, str(cfg.source))
    atomic_write_text(cfg.output, text)
    return {"source": str(cfg.source), "output": str(cfg.output), "classes": len(json.loads(text)),
            "questions": len(t.question_ids), "options": int(t.probs.shape[2])}


@dataclass
class ImportDescriptionsConfig:
    source: Path
    output: Path
    fmt: str = "lead-pp"  # lead-pp | dclip | labo (interop/concepts.py)
    as_kind: str = "descriptions"  # descriptions (one per class, LEAD's --clip) | questions (dclip, labo: yes/no per concept)
    classes: Path | None = None  # makd's class list: the file's names are matched to it (case, spaces, underscores)
    class_map: Path | None = None  # JSON {"makd class": "name in the file"}


def import_descriptions(cfg: ImportDescriptionsConfig) -> dict:
    from makd_cli.interop import concepts

    _check_format(cfg.fmt, concepts.FORMATS, "--from")
    if cfg.as_kind not in ("descriptions", "questions"):
        raise MakdError(f"--as {cfg.as_kind!r}: choose descriptions or questions")
    source = Path(cfg.source)
    text = read_text(source, f"{cfg.fmt} file")
    if cfg.as_kind == "questions":
        questions = concepts.yesno_questions(cfg.fmt, text, str(source))
        write_questions(cfg.output, questions)
        return {"source": str(source), "output": str(cfg.output), "format": cfg.fmt, "kind": "yesno", "questions": len(questions)}
    questions = concepts.descriptions(cfg.fmt, text, str(source), {})
    renamed = {}
    if cfg.classes is not None:  # the file's names -> makd's, as `import targets` matches LaViD's
        classes = read_classes(cfg.classes)
        file_names = [q.source["name"] for q in questions]
        class_map = _read_class_map(cfg.class_map)
        chosen, unused = lavid.match_classes(file_names, classes, class_map, str(source))
        by_file = {}
        for makd_name, file_name in zip(classes, chosen):
            by_file.setdefault(file_name, makd_name)
        for q in questions:
            if q.source["name"] in by_file:
                q.class_name = by_file[q.source["name"]]
                q.id = ""
                q.__post_init__()  # the id covers the class name
                if q.class_name != q.source["name"]:
                    renamed[q.source["name"]] = q.class_name
        questions = [q for q in questions if q.source["name"] in by_file]
    write_questions(cfg.output, questions)
    return {"source": str(source), "output": str(cfg.output), "format": cfg.fmt, "kind": "description",
            "descriptions": len(questions), "renamed": renamed}


@dataclass
class ExportDescriptionsConfig:
    source: Path
    output: Path
    fmt: str = "lead-pp"


def export_descriptions(cfg: ExportDescriptionsConfig) -> dict:
    from makd_cli.interop import concepts

    questions = read_questions(cfg.source)
    atomic_write_text(cfg.output, concepts.export_text(questions, cfg.fmt))
    return {"source": str(cfg.source), "output": str(cfg.output), "format": cfg.fmt, "descriptions": len(questions)}
