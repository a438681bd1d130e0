"""LaViD's published files (github lliangthomas/lavid), read and written exactly.

- Question sets ``questions/<dataset>/chat_50-5.txt``: blocks separated by blank lines; the first line
  of a block is the question, naming the class as "the class", then ``1. option`` lines. Lines are
  stripped. The reference joins a block's lines with single spaces and replaces every substring
  "class" by the class name (inside words too: "classes" becomes "<name>es"), and for some datasets
  a phrase after it ("the object" for caltech101...). Importing puts ``<object>`` exactly there.
- Targets ``questions/<dataset>/logits/<model>_chat_50-5.json``: ``{class name: [Q rows of M
  probabilities]}`` written by ``json.dump(..., ensure_ascii=False, indent=4)``. The reference's
  parser also emits an empty row for a repeated blank line (``qwen2.5-7B_chat_70-5.json`` has 71 rows,
  one empty); those are dropped on import and put back on export. The probabilities are bfloat16
  values, exactly representable in float32, so targets.h5 keeps them bit for bit; their rows sum to 1
  only within bfloat16's rounding (about 3e-3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.jsonio import dumps, loads, split_lines
from makd_cli.formats.questions import PLACEHOLDER, Question
from makd_cli.formats.targets import Targets

# After "class", the reference's llm_logits.py also replaces these phrases, per dataset (a substring test
# on the dataset name, as there).
EXTRA_PHRASES = {"caltech101": ("the object",), "oxfordpets": ("the animal", "the breed"), "stanfordcars": ("the car",)}
_OPTION = re.compile(r"^(\d+)\. (.+)$")


@dataclass
class Block:
    line: int  # 1-based line of the question
    question: str
    options: list[str]
    option_lines: list[int]


def phrases_for(dataset: str | None) -> tuple[str, ...]:
    return ("class",) + tuple(p for name, ps in EXTRA_PHRASES.items() if dataset and name in dataset for p in ps)


def parse_blocks(text: str, where: str) -> list[Block]:
    blocks: list[Block] = []
    current: list[tuple[int, str]] = []
    for lineno, raw in enumerate(split_lines(text) + [""], 1):
        line = raw.strip()
        if line:
            current.append((lineno, line))
            continue
        if not current:
            continue
        (qline, question), rest = current[0], current[1:]
        if _OPTION.match(question):
            raise MakdError(f"{where}:{qline}: a block starts with an option ({question[:40]!r}); each block is a question line, then '1. option' lines")
        if not rest:
            raise MakdError(f"{where}:{qline}: question {question[:40]!r} has no options; each block is a question line, then '1. option' lines")
        options = []
        for i, (optline, opt) in enumerate(rest, 1):
            m = _OPTION.match(opt)
            if not m or int(m.group(1)) != i:
                raise MakdError(f"{where}:{optline}: expected option {i} as '{i}. text', found {opt[:40]!r}")
            options.append(m.group(2))
        blocks.append(Block(qline, question, options, [ln for ln, _ in rest]))
        current = []
    return blocks


def placeholder_text(text: str, phrases: tuple[str, ...]) -> tuple[str, int]:
    """``text`` with every phrase replaced by ``<object>``, in the reference's order; and how many."""
    count = 0
    for phrase in phrases:
        count += text.count(phrase)
        text = text.replace(phrase, PLACEHOLDER)
    return text, count


def questions_from_text(text: str, where: str, dataset: str | None, source_name: str) -> tuple[list[Question], dict]:
    phrases = phrases_for(dataset)
    blocks = parse_blocks(text, where)
    if not blocks:
        raise MakdError(f"{where} holds no question blocks; a LaViD question file is blocks of a question line and '1. option' lines")
    questions: list[Question] = []
    substitutions = 0
    seen: dict[str, int] = {}
    m0 = len(blocks[0].options)
    for b in blocks:
        if len(b.options) != m0:
            raise MakdError(f"{where}:{b.line}: this question has {len(b.options)} options but the first has {m0}; "
                            "makd's targets need one option count per file")
        qtext, n = placeholder_text(b.question, phrases)
        if PLACEHOLDER not in qtext:
            raise MakdError(f"{where}:{b.line}: question {b.question[:50]!r} never says {' or '.join(repr(p) for p in phrases)}, "
                            "so the reference asks it without the class name; makd questions must name the class")
        options = []
        for opt, optline in zip(b.options, b.option_lines):
            otext, k = placeholder_text(opt, phrases)
            options.append(otext)
            n += k
        if len(set(options)) != len(options):
            raise MakdError(f"{where}:{b.line}: this question repeats an option; each option must differ")
        q = Question("mcq", qtext, options, source={"format": "lavid", "file": source_name, "line": b.line,
                                                   **({"dataset": dataset} if dataset else {})})
        if q.id in seen:
            raise MakdError(f"{where}:{b.line}: this question repeats the one at line {seen[q.id]}")
        seen[q.id] = b.line
        substitutions += n
        questions.append(q)
    return questions, {"questions": len(questions), "options": m0, "substitutions": substitutions, "phrases": list(phrases)}


def normalise(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def match_classes(lavid_names: list[str], classes: list[str], class_map: dict[str, str], where: str) -> tuple[list[str], list[str]]:
    """For each makd class, the LaViD key holding its row; and the LaViD keys no class took.

    Exact name first, then the --class-map entry, then equality after normalising case, spaces and
    underscores. Several makd classes may take one key (Caltech-101's Faces and Faces_easy are both "face")."""
    by_norm: dict[str, list[str]] = {}
    for key in lavid_names:
        by_norm.setdefault(normalise(key), []).append(key)
    bad_map = sorted(v for v in class_map.values() if v not in lavid_names)
    if bad_map:
        raise MakdError(f"--class-map names {len(bad_map)} LaViD class(es) that {where} lacks: {', '.join(map(repr, bad_map))}")
    chosen, unmatched, ambiguous = [], [], []
    for c in classes:
        if c in class_map:
            chosen.append(class_map[c])
        elif c in lavid_names:
            chosen.append(c)
        else:
            hits = by_norm.get(normalise(c), [])
            if len(hits) == 1:
                chosen.append(hits[0])
            else:
                (ambiguous if hits else unmatched).append(c)
                chosen.append("")
    if unmatched or ambiguous:
        unused = [k for k in lavid_names if k not in set(chosen)]
        unused_text = ", ".join(map(repr, unused[:10])) + (f" and {len(unused) - 10} more" if len(unused) > 10 else "")
        parts = []
        if unmatched:
            parts.append(f"{len(unmatched)} class(es) have no row in {where}: {', '.join(map(repr, unmatched))}")
        if ambiguous:
            parts.append(f"{len(ambiguous)} match several rows: {', '.join(map(repr, ambiguous))}")
        raise MakdError("; ".join(parts) + f" (its unused names: {unused_text or 'none'}); "
                        "map them with --class-map FILE.json holding {\"makd class\": \"LaViD name\"}")
    return chosen, [k for k in lavid_names if k not in set(chosen)]


def load_json_object(text: str, where: str, shape: str) -> dict:
    """A non-empty JSON object, or one line naming the file and the expected ``shape``."""
    try:
        data = loads(text, where)  # bounded depth; NaN, infinity and 1e400 refused
    except MakdError as exc:
        raise MakdError(f"{exc}; expected {shape}") from None
    if not isinstance(data, dict) or not data:
        raise MakdError(f"{where} must be a non-empty JSON object {shape}")
    return data


def parse_targets_json(text: str, where: str) -> dict[str, list]:
    data = load_json_object(text, where, "{class name: [Q rows of M probabilities]}")
    for name, rows in data.items():
        if not isinstance(rows, list) or not all(isinstance(r, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in r) for r in rows):
            raise MakdError(f"{where}: class {name!r} must hold a list of rows of numbers (Q x M probabilities)")
    return data


def targets_from_json(data: dict[str, list], classes: list[str], questions: list[Question], class_map: dict[str, str],
                      where: str, teacher: str, questions_sha256: str, source: dict) -> tuple[Targets, dict]:
    keys = list(data)
    first = data[keys[0]]
    empty_rows = [i for i, r in enumerate(first) if not r]
    for k in keys:
        if [i for i, r in enumerate(data[k]) if not r] != empty_rows or len(data[k]) != len(first):
            raise MakdError(f"{where}: class {k!r} has {len(data[k])} rows ({sum(not r for r in data[k])} empty) but class "
                            f"{keys[0]!r} has {len(first)} ({len(empty_rows)} empty); every class needs the same rows")
    Q, M = len(questions), len(questions[0].options)
    if len(first) - len(empty_rows) != Q:
        raise MakdError(f"{where} has {len(first) - len(empty_rows)} answer rows per class but the questions file has {Q} "
                        "questions; import the question file these targets answer")
    chosen, unused = match_classes(keys, classes, class_map, where)
    probs = np.zeros((len(classes), Q, M), dtype=np.float64)
    for c, key in enumerate(chosen):
        rows = [r for r in data[key] if r]
        for q, row in enumerate(rows):
            if len(row) != M:
                raise MakdError(f"{where}: class {key!r}, question {q + 1} has {len(row)} probabilities but the questions have {M} options")
            probs[c, q] = row
    if np.any(probs < 0) or np.any(probs > 1):
        raise MakdError(f"{where} holds probabilities outside [0, 1]")
    if not np.array_equal(probs.astype(np.float32).astype(np.float64), probs):
        raise MakdError(f"{where} holds probabilities float32 cannot keep exactly; makd's targets are float32")
    meta = {"source": source, "lavid": {"keys": chosen, "key_order": keys, "empty_rows": empty_rows}}
    t = Targets("class_mcq", list(classes), [q.id for q in questions], probs, teacher=teacher,
                questions_sha256=questions_sha256, option_labels=[str(i) for i in range(1, M + 1)], meta=meta)
    return t, {"classes": len(classes), "questions": Q, "options": M, "unused_lavid_classes": unused,
               "renamed": {c: k for c, k in zip(classes, chosen) if c != k}, "empty_rows_dropped": len(empty_rows)}


def targets_to_json(t: Targets, where: str) -> str:
    """LaViD's JSON, byte for byte as the reference writes it when the targets came from such a file."""
    if t.kind != "class_mcq":
        raise MakdError(f"{where} holds {t.kind} targets; LaViD's per-class files hold class_mcq targets (`makd extract --llm`)")
    lavid = t.meta.get("lavid") or {}
    keys = lavid.get("keys") if isinstance(lavid.get("keys"), list) and len(lavid.get("keys")) == len(t.classes) else list(t.classes)
    empty = sorted(int(i) for i in lavid.get("empty_rows", []))
    row_of: dict[str, int] = {}
    for c, k in enumerate(keys):
        row_of.setdefault(k, c)  # several makd classes from one LaViD row: that row once
    order = [k for k in lavid.get("key_order", []) if k in row_of] + [k for k in row_of if k not in lavid.get("key_order", [])]
    out = {}
    for k in order:
        rows = [[float(x) for x in row] for row in t.probs[row_of[k]]]
        for i in empty:
            rows.insert(i, [])
        out[k] = rows
    return dumps(out, indent=4)


# ---- the reference's extraction prompt (lavid/extract/llm_logits.py) ---------------------------
REFERENCE_INSTRUCTION = "Answer only with the option {word}. No additional commentary. "


def reference_prompt(q: Question, class_name: str, letters: bool = False) -> str:
    """The one user message the reference sends: its instruction, then the question block's lines joined by
    single spaces (the options keep their "1." numbers even with --alphabet, as there), the class name in
    place of every placeholder."""
    block = " ".join([q.text] + [f"{i}. {opt}" for i, opt in enumerate(q.options, 1)])
    return REFERENCE_INSTRUCTION.format(word="letter" if letters else "number") + block.replace(PLACEHOLDER, class_name)


# ---- per-image yes/no targets (MaKD rows of the LaViD repository) ------------------------------
# The reference's training code reads questions/<dataset>/logits/<teacher>_img.json: {image key: [Q p(yes)]},
# the key being the image's file name (for caltech101 "class folder/file name"), as llava_logits.py writes it.
def image_keys_for(sample_id: str) -> list[str]:
    """The keys a makd sample id may have in a LaViD per-image file, most specific first."""
    parts = sample_id.split("/")
    return list(dict.fromkeys([sample_id, "/".join(parts[-2:]), parts[-1]]))


def image_targets_from_json(data: dict, ids: list[str], labels, classes: list[str], question_ids: list[str], where: str,
                            teacher: str, questions_sha256: str, source: dict) -> tuple[Targets, dict]:
    Q = len(question_ids)
    chosen, missing, taken = [], [], {}
    for sid in ids:
        key = next((k for k in image_keys_for(sid) if k in data), None)
        if key is None:
            missing.append(sid)
            continue
        if key in taken:
            raise MakdError(f"{where}: images {taken[key]!r} and {sid!r} both match its key {key!r}; "
                            "the file names a split's images ambiguously")
        taken[key] = sid
        chosen.append(key)
    if missing:
        raise MakdError(f"{where} has no row for {len(missing)} of the split's {len(ids)} images (first: "
                        f"{', '.join(map(repr, missing[:3]))}); it keys images by file name (caltech101: folder/file)")
    probs = np.zeros((len(ids), Q), dtype=np.float64)
    for i, key in enumerate(chosen):
        row = data[key]
        if not isinstance(row, list) or len(row) != Q or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row):
            raise MakdError(f"{where}: image {key!r} must hold {Q} numbers (one p(yes) per question), found "
                            f"{len(row) if isinstance(row, list) else type(row).__name__}")
        probs[i] = row
    if np.any(probs < 0) or np.any(probs > 1):
        raise MakdError(f"{where} holds p(yes) outside [0, 1]")
    if not np.array_equal(probs.astype(np.float32).astype(np.float64), probs):
        raise MakdError(f"{where} holds probabilities float32 cannot keep exactly; makd's targets are float32")
    meta = {"source": source, "lavid": {"image_keys": chosen}}
    t = Targets("image_yesno", list(classes), list(question_ids), probs, teacher=teacher, questions_sha256=questions_sha256,
                images=list(ids), labels=np.asarray(labels), meta=meta)
    return t, {"images": len(ids), "questions": Q, "unused_images": len(data) - len(chosen)}


def image_targets_to_json(t: Targets, where: str) -> str:
    if t.kind != "image_yesno":
        raise MakdError(f"{where} holds {t.kind} targets; LaViD's per-image files hold image_yesno targets (`makd extract --mllm`)")
    keys = (t.meta.get("lavid") or {}).get("image_keys")
    if not isinstance(keys, list) or len(keys) != len(t.images):
        keys = [image_keys_for(i)[-1] for i in t.images]  # the file name, as the reference keys most datasets
        if len(set(keys)) != len(keys):
            keys = [image_keys_for(i)[1] for i in t.images]
    return dumps({k: [float(x) for x in row] for k, row in zip(keys, t.probs)}, indent=4)


def questions_from_lines(text: str, where: str, source_name: str) -> tuple[list[Question], dict]:
    """MaKD's question files (``multi_aspect_question/<dataset>.txt``): one yes/no question per line, asked
    about the image as written (blank lines skipped)."""
    questions, seen = [], {}
    for lineno, raw in enumerate(split_lines(text), 1):
        line = raw.strip()
        if not line:
            continue
        q = Question("yesno", line, source={"format": "makd", "file": source_name, "line": lineno})
        if q.id in seen:
            raise MakdError(f"{where}:{lineno}: this question repeats the one at line {seen[q.id]}")
        seen[q.id] = lineno
        questions.append(q)
    if not questions:
        raise MakdError(f"{where} holds no questions; a MaKD question file has one yes/no question per line")
    return questions, {"questions": len(questions), "options": 0, "substitutions": 0, "phrases": []}
