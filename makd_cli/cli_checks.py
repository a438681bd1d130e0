"""Checks every flag of the command line gets, whichever command or plug-in declares it.

``finite_floats``: a float flag (``--temperature``, ``--lr``, a plug-in's ``--kd-temperature`` ...)
refuses ``nan``, ``inf`` and ``-inf`` as a usage error (one line, exit 2). The parser reads them as
floats and a range check lets ``inf`` through, so without this ``--temperature inf`` made every
row uniform without a word. ``method_parts``: the one reading of a ``--method a+b`` spec.
"""

from __future__ import annotations

import math
import types

from makd_cli.errors import MakdError


def _not_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_not_finite(v) for v in value)
    return False


def _checked_process_value(param, ctx, value):
    from typer._click.exceptions import BadParameter

    value = param._makd_unchecked_process_value(ctx, value)
    if _not_finite(value):
        raise BadParameter("NaN and infinity are refused; give a finite number", ctx=ctx, param=param)
    return value


def finite_floats(command):
    """``command`` (and its subcommands) with every parameter refusing non-finite floats; idempotent."""
    for param in getattr(command, "params", []):
        if not hasattr(param, "_makd_unchecked_process_value"):
            param._makd_unchecked_process_value = param.process_value
            param.process_value = types.MethodType(_checked_process_value, param)
    for sub in (getattr(command, "commands", None) or {}).values():
        finite_floats(sub)
    return command


def method_parts(spec: str | None, default: str = "ce") -> list[str]:
    """The methods of ``--method a+b``: every term named once; an empty term (``lavid+``, ``a++b``) or a
    repeated one (``kd+kd``, which would count KD twice) is one line."""
    spec = default if spec is None else spec
    parts = [p.strip() for p in spec.split("+")]
    if not any(parts):
        raise MakdError("--method is empty; use ce, lavid, makd or a combination such as lavid+kd")
    if not all(parts):
        raise MakdError(f"--method {spec!r} has an empty term; join method names with + (e.g. lavid+kd)")
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise MakdError(f"--method {spec!r} names {', '.join(repeated)} more than once; each method is one term (its weight is its "
                        "own option, e.g. --aux-weight)")
    return parts
