"""The one reading of a ``--method a+b`` spec, for the command line (which plug-in options to offer) and
for training (which loss terms to build)."""

from __future__ import annotations

from makd_cli.errors import MakdError


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
