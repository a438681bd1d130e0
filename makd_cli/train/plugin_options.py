"""A run's plug-in options: which plug-ins a config chooses, and each one's declared options resolved.

The options a user gives are keyed by option (``{"kd_temperature": 4.0}``, as the CLI passes them);
each goes to every chosen plug-in that declares it (a shared declaration such as the KD family's
``--kd-temperature`` is one option), the rest take their declared defaults, and the run records them
under the plug-in's name (``{"method:kd": {...}}``). An option no chosen plug-in declares is one line.
"""

from __future__ import annotations

from makd_cli.errors import MakdError
from makd_cli.method_spec import method_parts
from makd_cli.registry import KINDS, option_values


def chosen_plugins(cfg) -> list[tuple[str, str]]:
    """(kind, name) of every plug-in a training config chooses, in the order their options are listed."""
    from makd_cli.train.tasks import task_name

    methods = method_parts(cfg.method)
    chosen = [("task", task_name(cfg.task, cfg.method))]
    chosen += [("method", m) for m in methods if m != "ce"]
    if cfg.control:
        chosen.append(("control", cfg.control))
    chosen.append(("student", cfg.student))
    name = cfg.data.partition(":")[0]
    chosen.append(("dataset", name))
    return chosen


def resolve_options(cfg) -> dict:
    """``cfg.options`` as {"kind:name": {key: value}} with every declared option of the chosen plug-ins
    (given, else its default); already-resolved options pass through unchanged."""
    given = dict(cfg.options or {})
    nested = {k: dict(v) for k, v in given.items() if ":" in k}
    flat = {k: v for k, v in given.items() if ":" not in k}
    resolved, used = {}, set()
    for kind, name in chosen_plugins(cfg):
        registry = KINDS[kind].load()
        if name not in registry:
            continue  # an unknown name is the plug-in's own one-line error where it is built
        declared = registry.options(name)
        if not declared:
            continue
        label, keys = f"{kind}:{name}", {o.key for o in declared}
        mine = {**{k: v for k, v in nested.pop(label, {}).items() if k in keys}, **{k: v for k, v in flat.items() if k in keys}}
        used |= set(mine) & set(flat)
        resolved[label] = option_values(declared, mine)
    stray = sorted(set(flat) - used)
    if stray or nested:
        names = [f"--{k.replace('_', '-')}" for k in stray] + list(nested)
        raise MakdError(f"{', '.join(names)}: not an option of the chosen plug-ins (--method {cfg.method}"
                        + (f", --task {cfg.task}" if cfg.task else "") + "); `makd plugins` lists who declares what")
    return resolved
