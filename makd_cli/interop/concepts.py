"""Published class descriptions and concepts as makd questions: LEAD++'s CSVs, DCLIP's descriptor JSON, LaBo's concepts.

- ``lead-pp``: LEAD++'s ``text_description/output_<dataset>.csv`` (header ``class name,description``, one row
  per class; github HuiGuanLab/LEAD-pp): one ``description`` question per class, the text kept exactly.
- ``dclip``: "Visual Classification via Description from LLMs" descriptor files ``{class: [descriptor, ...]}``;
  as descriptions, each class's descriptors in DCLIP's own sentence form ("{class}, which has ...") joined
  by "; "; as yes/no questions, every distinct descriptor once ("Does the <object> have ...?").
- ``labo``: LaBo's ``class2concepts.json`` (``{class: [concept, ...]}``), the same two ways.

Each record keeps what it came from in ``source`` (format, the file's class name, the descriptors), so
``makd export descriptions`` writes the file back: LEAD++'s CSV byte for byte.
"""

from __future__ import annotations

import csv
import io
import json

from makd_cli.errors import MakdError
from makd_cli.formats.questions import PLACEHOLDER, Question

FORMATS = ("lead-pp", "dclip", "labo")
LEAD_HEADER = ["class name", "description"]


def read_lead_pp_csv(text: str, where: str) -> list[tuple[str, str]]:
    return _read_lead_pp(text, where)[0]


def _read_lead_pp(text: str, where: str) -> tuple[list[tuple[str, str]], bool]:
    """The rows, and whether the file has a third, empty column (``output_gptRandomLabel_bird.csv``'s header
    ends in a comma)."""
    rows = list(csv.reader(io.StringIO(text)))
    head = [c.strip().lower() for c in rows[0]] if rows else []
    extra = head == LEAD_HEADER + [""]
    if head != LEAD_HEADER and not extra:
        raise MakdError(f"{where}: not a LEAD++ description file; its first line must be `class name,description`")
    out = []
    for i, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if extra and len(row) == 3 and not row[2]:
            row = row[:2]
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise MakdError(f"{where}:{i}: expected `class name,description` (two fields), found {len(row)} field(s)")
        out.append((row[0], row[1]))
    if not out:
        raise MakdError(f"{where} holds no descriptions")
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MakdError(f"{where}: class(es) described twice: {', '.join(map(repr, dup))}; LEAD takes one description per class")
    return out, extra


def write_lead_pp_csv(rows: list[tuple[str, str]], extra_column: bool = False) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)  # the published files: minimal quoting, \r\n line ends
    tail = [""] if extra_column else []
    w.writerow(LEAD_HEADER + tail)
    w.writerows([list(r) + tail for r in rows])
    return buf.getvalue()


def read_concept_json(text: str, where: str, fmt: str) -> dict[str, list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MakdError(f"{where} is not valid JSON ({exc.msg}); --from {fmt} reads {{class: [descriptor, ...]}}") from None
    if not isinstance(data, dict) or not data:
        raise MakdError(f"{where}: --from {fmt} reads a JSON object {{class: [descriptor, ...]}}")
    for k, v in data.items():
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s.strip() for s in v):
            raise MakdError(f"{where}: class {k!r} must map to a non-empty list of strings")
    return data


def dclip_sentence(class_name: str, descriptor: str) -> str:
    """DCLIP's ``make_descriptor_sentence``: the descriptor after "which is" / "which" / "which has"."""
    d = descriptor.strip()
    if d.startswith(("a ", "an ")):
        return f"{class_name}, which is {d}"
    if d.startswith(("has ", "often ", "typically ", "may ", "can ")):
        return f"{class_name}, which {d}"
    if d.startswith("used "):
        return f"{class_name}, which is {d}"
    return f"{class_name}, which has {d}"


def _renamed(name: str, rename: dict[str, str]) -> str:
    return rename.get(name, name)


def descriptions(fmt: str, text: str, where: str, rename: dict[str, str]) -> list[Question]:
    """One description question per class; ``rename``: the file's class name -> makd's."""
    if fmt == "lead-pp":
        rows, extra = _read_lead_pp(text, where)
        return [Question("description", d, class_name=_renamed(n, rename),
                         source={"format": fmt, "name": n, **({"extra_column": True} if extra else {})}) for n, d in rows]
    data = read_concept_json(text, where, fmt)
    out = []
    for n, items in data.items():
        body = "; ".join(dclip_sentence(n, d) for d in items) if fmt == "dclip" else f"{n}: " + ", ".join(items)
        out.append(Question("description", body, class_name=_renamed(n, rename), source={"format": fmt, "name": n, "items": list(items)}))
    return out


def yesno_questions(fmt: str, text: str, where: str) -> list[Question]:
    """Every distinct descriptor or concept once, as a yes/no question about the image's <object>."""
    if fmt == "lead-pp":
        raise MakdError("--from lead-pp holds one paragraph per class: import it --as descriptions")
    data = read_concept_json(text, where, fmt)
    seen: dict[str, None] = {}
    for items in data.values():
        for d in items:
            seen.setdefault(" ".join(d.split()), None)
    return [Question("yesno", f"Does the {PLACEHOLDER} have {d}?" if not d.lower().startswith(("a ", "an ", "is ", "has "))
                     else f"Is this {PLACEHOLDER} {d}?" if d.lower().startswith(("a ", "an ")) else f"Does the {PLACEHOLDER} show: {d}?",
                     source={"format": fmt, "concept": d}) for d in seen]


def export_text(questions: list[Question], fmt: str) -> str:
    """The file the descriptions came from (their ``source``): LEAD++'s CSV, or {class: [items]} JSON."""
    if fmt not in FORMATS:
        raise MakdError(f"--to {fmt!r} is unknown; supported: {', '.join(FORMATS)}")
    if any(q.kind != "description" for q in questions):
        raise MakdError("export descriptions writes description questions (`makd import descriptions`, `gen-questions --kind description`)")
    name = lambda q: (q.source or {}).get("name") or q.class_name  # noqa: E731 - the file's own class name
    if fmt == "lead-pp":
        return write_lead_pp_csv([(name(q), q.text) for q in questions], any((q.source or {}).get("extra_column") for q in questions))
    missing = [q.id for q in questions if "items" not in (q.source or {})]
    if missing:
        raise MakdError(f"--to {fmt}: {len(missing)} description(s) have no descriptor list (first: {missing[0]}); only "
                        "descriptions imported --from dclip or labo can be written back")
    return json.dumps({name(q): q.source["items"] for q in questions}, indent=4, ensure_ascii=False) + "\n"
