"""Text lines and JSON as makd reads and writes them: one set of limits for every reader.

- Lines split on ``\\n`` only (a ``\\r`` before it is dropped): ``str.splitlines`` would also split at a
  vertical tab, a form feed, U+0085, U+2028 or U+2029, which may sit inside a class name or a JSON string.
- A JSON value nests at most ``MAX_JSON_DEPTH`` deep (Python's parser recurses and would end in a
  ``RecursionError``), a JSON Lines record holds at most ``MAX_LINE_CHARS`` characters, and ``NaN``,
  ``Infinity`` or a number too large for a float (``1e400``) is refused: no reader gets a non-finite number.
- Writers (``dumps``) escape U+2028 and U+2029, so every line makd writes is one line to any reader.
"""

from __future__ import annotations

import json
import math
import re
from typing import Iterator

from makd_cli.errors import MakdError

MAX_JSON_DEPTH = 64  # makd's own records nest 3 deep, COCO 4; a deeper value is not one of makd's files
DEPTH_SCAN_CHARS = 8 << 20
MAX_LINE_CHARS = 1 << 20  # one JSON Lines record (a question, an epoch of metrics) is a few hundred characters

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


def split_lines(text: str) -> list[str]:
    """``text`` cut at ``\\n`` only; a trailing ``\\r`` of a line (Windows line ends) is dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class _NotFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"the number {text[:20]} is too large for a float")
    return value


def _no_constant(name: str):
    raise _NotFinite(f"{name} is not a number makd reads (NaN and infinity are refused)")


def loads(text: str, where: str, max_depth: int = MAX_JSON_DEPTH, allow_nonfinite: bool = False):
    """Parse JSON from a file makd reads; anything wrong is one line starting with ``where``.

    ``allow_nonfinite``: NaN and infinity read as floats (a training history records a loss that became NaN)."""
    # the scan costs a pass over the text: large documents (COCO's 450 MB) rely on the parser's own
    # recursion limit, caught below, for the same one line
    if len(text) <= DEPTH_SCAN_CHARS and json_depth(text) > max_depth:
        raise MakdError(f"{where} nests arrays or objects more than {max_depth} deep; it is not a file makd writes")
    finite = {} if allow_nonfinite else {"parse_float": _finite_float, "parse_constant": _no_constant}
    try:
        return json.loads(text, **finite)
    except _NotFinite as exc:
        raise MakdError(f"{where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MakdError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise MakdError(f"{where} nests arrays or objects too deep; it is not a file makd writes") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise MakdError(f"{where} is not JSON makd reads ({str(exc)[:80]})") from None


def iter_jsonl(text: str, where: str, what: str = "record", allow_nonfinite: bool = False) -> Iterator[tuple[int, object]]:
    """``(line number, value)`` for each non-blank line of a JSON Lines text."""
    for lineno, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            raise MakdError(f"{where}:{lineno} is {len(line)} characters long; one {what} per line, at most {MAX_LINE_CHARS}")
        try:
            value = loads(line, f"{where}:{lineno}", allow_nonfinite=allow_nonfinite)
        except MakdError as exc:
            raise MakdError(f"{exc}; each line must be one {what}") from None
        yield lineno, value


def dumps(value, **kwargs) -> str:
    """``json.dumps`` for files makd writes: U+2028/U+2029 escaped, NaN and infinity refused."""
    kwargs.setdefault("ensure_ascii", False)
    try:
        text = json.dumps(value, allow_nan=False, **kwargs)
    except ValueError as exc:
        raise MakdError(f"cannot write a non-finite number to a JSON file ({exc})") from None
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
