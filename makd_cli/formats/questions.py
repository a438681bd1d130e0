"""questions.jsonl, format version 1: one question per line.

Each record: ``format_version``, a stable ``id`` (hash of kind, text and options, so the same
question keeps its id across runs), ``kind`` (yesno | mcq | description), ``text``,
``options`` (mcq only), ``class_name`` (description only) and ``source`` (model, prompt_sha256,
seed). Per-class questions carry the placeholder ``<object>``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.fileio import atomic_write_text, read_text
from makd_cli.jsonio import dumps, iter_jsonl, split_lines

FORMAT_VERSION = 1
PLACEHOLDER = "<object>"
KINDS = ("yesno", "mcq", "description")


@dataclass
class Question:
    kind: str
    text: str
    options: list[str] = field(default_factory=list)
    class_name: str | None = None
    source: dict = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = question_id(self.kind, self.text, self.options, self.class_name)

    def instantiate(self, class_name: str) -> str:
        """The question text with the placeholder replaced by a class name."""
        return self.text.replace(PLACEHOLDER, class_name)

    def to_record(self) -> dict:
        rec = {"format_version": FORMAT_VERSION, **asdict(self)}
        if self.kind != "mcq":
            rec.pop("options")
        if self.kind != "description":
            rec.pop("class_name")
        return rec


REFERENCE_FORMATS = ("lavid",)  # imported reference questions keep the reference's own substitution (interop/lavid.py)


def placeholder_problem(text: str, options: list[str] = (), required: bool = True, source: dict | None = None) -> str | None:
    """The one placeholder rule, for gen-questions' validator and the questions reader alike: the
    class appears exactly once in the text (``required``: per-class questions) and never in an option.
    Questions imported from LaViD's files (``source.format`` lavid) are asked as the reference asks them,
    which replaces every "class" (twice in a few of its questions): only the placeholder's presence is checked."""
    count = text.count(PLACEHOLDER)
    if required and count == 0:
        return f"no {PLACEHOLDER} placeholder"
    if (source or {}).get("format") in REFERENCE_FORMATS:
        return None
    if count > 1:
        return "placeholder repeated"
    if any(PLACEHOLDER in o for o in options):
        return "placeholder in option"
    return None


def question_id(kind: str, text: str, options: list[str], class_name: str | None = None) -> str:
    payload = json.dumps([kind, " ".join(text.split()), list(options), class_name])
    return "q" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:10]


def write_questions(path: str | Path, questions: list[Question]) -> None:
    lines = [dumps(q.to_record()) for q in questions]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_questions(path: str | Path, kind: str | None = None) -> list[Question]:
    """Read and check a questions file; ``kind`` restricts it to one kind."""
    path = Path(path)
    questions: list[Question] = []
    for lineno, rec in iter_jsonl(read_text(path, "questions file"), str(path), "question record"):
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict):
            raise MakdError(f"{where} is not a JSON object; each line must be one question record")
        version = rec.get("format_version")
        if version != FORMAT_VERSION:
            raise MakdError(
                f"{where} has format_version {version!r}, this makd reads version {FORMAT_VERSION}; "
                "regenerate it with `makd gen-questions`"
            )
        if rec.get("kind") not in KINDS:
            raise MakdError(f"{where} has kind {rec.get('kind')!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(rec.get("text"), str) or not rec["text"].strip():
            raise MakdError(f"{where} has no question text")
        options = rec.get("options") or []
        if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
            raise MakdError(f"{where}: options must be a list of non-empty strings, found {json.dumps(options)[:60]}")
        if len(set(options)) != len(options):
            raise MakdError(f"{where}: options repeat ({', '.join(sorted({o for o in options if options.count(o) > 1}))}); each option must differ")
        for name, want, types in (("class_name", "a string", (str, type(None))), ("source", "an object", (dict, type(None))),
                                  ("id", "a string", (str, type(None)))):
            if not isinstance(rec.get(name), types):
                raise MakdError(f"{where}: {name} must be {want}, found {json.dumps(rec.get(name))[:60]}")
        q = Question(
            kind=rec["kind"],
            text=rec["text"],
            options=list(options),
            class_name=rec.get("class_name"),
            source=dict(rec.get("source") or {}),
            id=str(rec.get("id") or ""),
        )
        if q.kind == "mcq" and len(q.options) < 2:
            raise MakdError(f"{where}: a multiple-choice question needs at least 2 options")
        # Yes/no aspect questions may be about the image as a whole ("Is there water nearby?"); the
        # per-class extractor checks for the placeholder itself.
        problem = placeholder_problem(q.text, q.options, required=q.kind == "mcq", source=q.source)
        if problem is not None:
            raise MakdError(f"{where}: question {q.id}: {problem}; per-class questions name the class once, as {PLACEHOLDER}, "
                            "in the question text (gen-questions refuses such items too)")
        questions.append(q)
    if not questions:
        raise MakdError(f"questions file {path} has no questions")
    ids = [q.id for q in questions]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise MakdError(f"questions file {path} repeats id(s) {', '.join(sorted(dup))}; ids must be unique")
    if kind is not None:
        wrong = [q.id for q in questions if q.kind != kind]
        if wrong:
            raise MakdError(
                f"questions file {path} holds {questions[0].kind} questions but {kind} questions are "
                f"needed here (first mismatch: {wrong[0]}); pass a {kind} questions file"
            )
    if len({q.kind for q in questions}) > 1:
        raise MakdError(f"questions file {path} mixes kinds; keep one kind per file")
    mcq_m = {len(q.options) for q in questions if q.kind == "mcq"}
    if len(mcq_m) > 1:
        raise MakdError(f"questions file {path} mixes option counts {sorted(mcq_m)}; all questions need the same M")
    return questions


def read_classes(path: str | Path) -> list[str]:
    """A class list: one class name per line (blank lines and # comments ignored)."""
    path = Path(path)
    names = [ln.strip() for ln in split_lines(read_text(path, "class list"))]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise MakdError(f"class list {path} is empty; write one class name per line")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MakdError(f"class list {path} repeats {', '.join(dup)}; class names must be unique")
    return names


def write_classes(path: str | Path, names: list[str]) -> None:
    """Write a class list (``-``: standard output) that ``read_classes`` reads back as ``names``: a name
    holding a line break, starting with ``#`` or with spaces around it would come back otherwise, so it is
    refused in one line."""
    for name in names:
        if "\n" in name or "\r" in name or name != name.strip() or not name or name.startswith("#"):
            raise MakdError(f"class name {name!r} cannot be written to a class list (one name per line, no line breaks, "
                            "no spaces around it, not starting with #); rename that class folder")
    atomic_write_text(path, "\n".join(names) + "\n")
