"""Methods: one file per method, registered with ``@register_method`` (found without a module list).

``build_terms("lavid+kd", ctx)`` returns the loss terms of a combined method; ``ce`` is the
baseline and adds no term (CE on the class logits is always part of the loss).
"""

from __future__ import annotations

from dataclasses import replace

from makd_cli.errors import MakdError
from makd_cli.method_spec import method_parts
from makd_cli.methods.base import METHODS, Batch, MethodContext, MethodTerm, register_method
from makd_cli.registry import Option, option_values


def _with_options(ctx: MethodContext, name: str) -> MethodContext:
    """``ctx`` with method ``name``'s declared options checked and their defaults filled in."""
    return replace(ctx, options={**ctx.options, **option_values(METHODS.options(name), ctx.options)})


def build_terms(spec: str, ctx: MethodContext) -> list[MethodTerm]:
    parts = method_parts(spec)  # an empty or repeated term is refused
    terms = [METHODS.get(p)(_with_options(ctx, p)) for p in parts if p != "ce"]
    with_targets = [t for t in terms if t.target_kinds]
    if len(with_targets) > 1:
        raise MakdError(f"--method {spec}: only one target-based method at a time (found {', '.join(t.name for t in with_targets)})")
    return terms


__all__ = ["Batch", "METHODS", "MethodContext", "MethodTerm", "Option", "build_terms", "register_method"]
