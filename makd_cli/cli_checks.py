"""Checks every flag of the command line gets, whichever command or plug-in declares it.

``finite_floats``: a float flag (``--temperature``, ``--lr``, a plug-in's ``--kd-temperature`` ...)
refuses ``nan``, ``inf`` and ``-inf`` as a usage error (one line, exit 2). The parser reads them as
floats and a range check lets ``inf`` through, so without this ``--temperature inf`` made every
row uniform without a word.
"""

from __future__ import annotations

import math
import types


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
