"""Checks every generated item: what a question must be before a teacher answers it.

Each check returns ``None`` when the item is fine, else a short reason (tallied in the report).
"""

from __future__ import annotations

import json
import re

from makd_cli.formats.questions import PLACEHOLDER, placeholder_problem

MAX_OPTION_WORDS = 12


_ENUMERATION = re.compile(r"^\s*(?:q(?:uestion)?\s*)?\d+\s*[.):-]\s*", re.I)


def strip_enumeration(text: str) -> str:
    """Models number their questions ("1. How ...", "Q2: Does ..."): the number is not part of it."""
    return _ENUMERATION.sub("", text)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w<>]+", " ", strip_enumeration(text).lower()).split())


# A class name counts only as a whole word: "shirt" is not mentioned by "T-shirt".
_BEFORE, _AFTER = r"(?<![\w/-])", r"(?![\w/-])"


def _mentions(text: str, name: str) -> bool:
    return re.search(_BEFORE + re.escape(name.lower()) + _AFTER, text.lower()) is not None


_DECODER = json.JSONDecoder()


def parse_json_object(raw) -> dict | None:
    """The first JSON object in ``raw`` (models sometimes wrap it in prose or code fences); braces
    inside its strings are fine. ``None`` when there is none."""
    if not isinstance(raw, str):
        return None
    raw = raw.strip()
    start = raw.find("{")
    while start != -1:
        try:
            obj, _ = _DECODER.raw_decode(raw, start)
        except json.JSONDecodeError:
            start = raw.find("{", start + 1)
            continue
        return obj if isinstance(obj, dict) else None
    return None


def fix_placeholder(text: str, classes: list[str]) -> str:
    """Models often write a class name, or a variant of the placeholder, where <object> belongs."""
    text = re.sub(r"<\s*object\s*>|\[\s*object\s*\]|\{\s*object\s*\}|<\s*class\s*>|\[\s*class\s*\]", PLACEHOLDER, text, flags=re.I)
    if PLACEHOLDER not in text:
        for name in sorted(classes, key=len, reverse=True):
            if _mentions(text, name):
                text = re.sub(_BEFORE + re.escape(name) + _AFTER, PLACEHOLDER, text, count=1, flags=re.I)
                break
    return " ".join(text.split())


def check_question_text(text: str, classes: list[str], seen: set[str]) -> str | None:
    if not text or len(text.split()) < 3:
        return "question too short"
    if not text.rstrip().endswith("?"):
        return "not a question"
    problem = placeholder_problem(text)
    if problem is not None:
        return problem
    if any(_mentions(text.replace(PLACEHOLDER, " "), c) for c in classes):
        return "class name in question"
    if normalise(text) in seen:
        return "duplicate question"
    return None


def check_options(options, m: int, classes: list[str]) -> str | None:
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return "options not a list of strings"
    opts = [o.strip() for o in options]
    if len(opts) != m:
        return f"{len(opts)} options instead of {m}"
    if any(not o for o in opts):
        return "empty option"
    if len({normalise(o) for o in opts}) != m:
        return "repeated options"
    if any(len(o.split()) > MAX_OPTION_WORDS for o in opts):
        return "option too long"
    if any(_mentions(o, c) for o in opts for c in classes):
        return "class name in option"
    return placeholder_problem("", opts, required=False)


def _question_text(obj: dict | None, classes: list[str], seen: set[str]) -> tuple[str, str | None]:
    """The item's question, cleaned, and the first reason to reject it (``None`` if it passes)."""
    if obj is None:
        return "", "not a JSON object"
    text = obj.get("question")
    if not isinstance(text, str):
        return "", "no question field"
    text = fix_placeholder(strip_enumeration(text), classes)
    return text, check_question_text(text, classes, seen)


def validate_mcq(obj: dict | None, m: int, classes: list[str], seen: set[str]) -> tuple[dict | None, str | None]:
    text, reason = _question_text(obj, classes, seen)
    reason = reason or check_options(obj.get("options"), m, classes)
    if reason:
        return None, reason
    return {"text": text, "options": [o.strip() for o in obj["options"]]}, None


def validate_yesno(obj: dict | None, classes: list[str], seen: set[str]) -> tuple[dict | None, str | None]:
    text, reason = _question_text(obj, classes, seen)
    if reason is None and not re.match(r"^(is|are|does|do|can|has|have|was|were|will|would|could|should)\b", text.strip().lower()):
        reason = "not a yes/no question"
    return (None, reason) if reason else ({"text": text}, None)


def count_clip_tokens(text: str) -> int:
    """An estimate of CLIP's BPE token count: words and punctuation marks, plus start/end tokens."""
    return len(re.findall(r"\w+|[^\w\s]", text)) + 2


def validate_description(obj: dict | None, name: str, limit_tokens: int) -> tuple[dict | None, str | None]:
    if obj is None:
        return None, "not a JSON object"
    text = obj.get("description")
    if not isinstance(text, str) or len(text.split()) < 4:
        return None, "description too short"
    text = " ".join(text.split())
    if count_clip_tokens(text) > limit_tokens:
        return None, f"longer than {limit_tokens} CLIP tokens"
    return {"text": text}, None
