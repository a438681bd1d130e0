"""The command line built from the plug-ins: their declared options become flags; usage errors are one line.

``cli.py`` declares each command's own flags with typer. When a subcommand is resolved (``makd.main`` and
``CliRunner(app)`` alike), ``PluginGroup`` adds to it every option declared by the plug-ins of the kinds
that serve it (``registry.KINDS``: ``makd train`` the methods', tasks', controls', students' and
datasets'; ``extract`` the backends', teacher kinds' and datasets'; ``inspect`` the views'; ...), with
the option's type, range and help, so a new plug-in with an option of its own is one new file. A flag
given for a plug-in that is not chosen is one line. The job receives only the options the user gave
(``plugin_options()``); the plug-in fills in its own defaults. The command's own flags are reserved
(``registry.reserve_flags``) as the app is built, so a plug-in option that would shadow one is refused
when the plug-in registers. Only the subcommand being run gets its plug-ins, so ``makd --version``
imports none.
"""

from __future__ import annotations

import copy
import inspect
import typing
from typing import Callable, Optional

import typer
from typer.core import TyperGroup

from makd_cli.cli_checks import finite_floats
from makd_cli.errors import MakdError
from makd_cli.method_spec import method_parts
from makd_cli.registry import KINDS, Kind, Option, reserve_flags

_values: dict = {}  # the plug-in options given in this invocation, by key (filled by the command's callback)


def _chosen_task(params: dict) -> list[str]:
    from makd_cli.train.tasks import task_name

    return [task_name(params.get("task"), params.get("method") or "ce")]


def _chosen_mllm_backend(params: dict) -> list[str]:
    if not params.get("mllm"):
        return []
    from makd_cli.teachers.backends import claiming_backend

    return [claiming_backend(params["mllm"], params.get("backend"))]


# How the plug-ins of each kind are chosen from a command's parsed flags (default: the value of the
# kind's selector flag, e.g. --view NAME).
CHOOSERS: dict[str, Callable[[dict], list[str]]] = {
    "method": lambda p: method_parts(p.get("method") or "ce"),
    "task": _chosen_task,
    "dataset": lambda p: [p["data"].partition(":")[0]] if p.get("data") else [],
    "multimodal-backend": _chosen_mllm_backend,
    "teacher-kind": lambda p: [k for k in ("llm", "mllm", "clip", "teacher") if p.get(k)],
    "teacher": lambda p: [p["teacher"].partition(":")[0]] if p.get("teacher") else [],
}


def chosen(kind: Kind, params: dict) -> list[str]:
    if kind.name in CHOOSERS:
        return CHOOSERS[kind.name](params)
    value = params.get(kind.selector.lstrip("-").replace("-", "_"))
    return [value] if value else []


def kinds_of(command: str) -> list[Kind]:
    return [k for k in KINDS.values() if command in k.commands]


def plugin_options() -> dict:
    """The plug-in options the user gave in this invocation, by key (``my_option``); defaults are the plug-ins'."""
    return dict(_values)


def _flags(param: inspect.Parameter) -> set[str]:
    decls = getattr(param.default, "param_decls", None) or ()
    names = {d for d in decls if d.startswith("-")}
    return names or {"--" + param.name.replace("_", "-")}


def command_flags(func) -> set[str]:
    """Every flag a typer command function declares itself."""
    return set().union(*(_flags(p) for p in inspect.signature(func).parameters.values()))


def _owner_text(owners: list[tuple[Kind, str]]) -> str:
    """``--method kd/dkd`` or ``--task detection``: who declares a flag, as the user selects it."""
    by_kind: dict[str, list[str]] = {}
    for kind, name in owners:
        by_kind.setdefault(kind.selector, []).append(name)
    return " or ".join(f"{selector} {'/'.join(names)}" for selector, names in by_kind.items())


def _selector_help(func, params: list[inspect.Parameter], kinds: list[Kind]) -> list[inspect.Parameter]:
    """Fill a ``{choices}`` placeholder in a selector flag's help with its registry's names."""
    out = []
    for param in params:
        info = param.default
        text = getattr(info, "help", None)
        if text and "{choices}" in text:
            flag = "--" + param.name.replace("_", "-")
            kind = next((k for k in kinds if k.selector == flag), None)
            if kind is not None:
                names = kind.load().names()
                if kind.name == "method":
                    from makd_cli.train.tasks import task_methods

                    names = ["ce"] + names + task_methods()
                info = copy.copy(info)
                info.help = text.replace("{choices}", ", ".join(names))
                param = param.replace(default=info)
        out.append(param)
    return out


def with_plugin_options(func, command: str):
    """``func`` (a typer command) with a typer option for every option the plug-ins serving ``command``
    declare. Values are checked against the declaration (type, range, choices), then kept for
    ``plugin_options()``; a value for a plug-in that is not chosen is one line."""
    kinds = kinds_of(command)
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func)
    existing = command_flags(func)
    owners: dict[str, list[tuple[Kind, str]]] = {}
    declared: dict[str, Option] = {}
    for kind in kinds:
        for plugin, opt in kind.load().all_options():
            declared.setdefault(opt.flag, opt)
            owners.setdefault(opt.flag, []).append((kind, plugin))
    params = _selector_help(func, list(sig.parameters.values()), kinds)
    added = {}
    for flag, opt in declared.items():
        if flag in existing:  # refused at registration; a plug-in registered before the CLI reserved its flags
            raise MakdError(f"{_owner_text(owners[flag])}: option {flag} is a flag of `makd {command}` itself; "
                            "rename the plug-in's option")
        limits = opt.limits()
        text = (f"{opt.help} [{_owner_text(owners[flag])}; default: {opt.default}"
                + (f"; {limits}" if limits else "") + "]")
        number = opt.type in (int, float)
        switch = opt.type is bool  # a bare --flag (False when absent, which counts as not given)
        info = typer.Option(False if switch else None, flag, help=text, min=opt.min if number else None,
                            max=opt.max if number else None, rich_help_panel="Options of the plug-ins")
        kind_type = bool if switch else Optional[opt.type]
        params.append(inspect.Parameter(opt.key, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind_type))
        hints[opt.key] = kind_type
        added[opt.key] = (opt, owners[flag])

    def command_fn(**kwargs):
        given = {key: kwargs.pop(key) for key in added}
        given = {key: value for key, value in given.items() if value is not None and value is not False}
        _values.clear()
        for key, value in given.items():
            opt, plugins = added[key]
            if not any(name in chosen(kind, kwargs) for kind, name in plugins):
                picked = []
                for kind in {k.name: k for k, _ in plugins}.values():
                    names = chosen(kind, kwargs)
                    if kind.name == "task" and not kwargs.get("task"):  # the task --method chose: name the method
                        picked.append(f"--method {kwargs.get('method') or 'ce'}")
                    else:
                        picked.append(f"{kind.selector} {'+'.join(names)}" if names else f"no {kind.selector}")
                raise MakdError(f"{opt.flag} is an option of {_owner_text(plugins)}, not of {', '.join(picked)}")
            _values[key] = opt.check(value)
        return func(**kwargs)

    command_fn.__name__, command_fn.__doc__ = func.__name__, func.__doc__
    command_fn.__signature__ = sig.replace(parameters=params)
    command_fn.__annotations__ = hints
    return command_fn


class PluginGroup(TyperGroup):
    """The top-level group: a subcommand with plug-ins is rebuilt with their options when it is resolved.

    Resolving happens only for the subcommand being run (not for ``--help`` listings or ``--version``),
    for ``makd.main`` and for ``typer.testing.CliRunner(app)`` alike.
    """

    typer_app: typer.Typer | None = None  # set by ``plugin_group``

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        info = next((c for c in self.typer_app.registered_commands if (c.name or c.callback.__name__) == name), None)
        if not name or info is None or not kinds_of(name):
            return name, finite_floats(command), recipe_args(ctx, name, command, bare_flag_values(name, rest))
        info = copy.copy(info)
        info.callback = with_plugin_options(info.callback, name)
        app = self.typer_app
        command = finite_floats(typer.main.get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                                                 rich_markup_mode=app.rich_markup_mode))
        return name, command, recipe_args(ctx, name, command, bare_flag_values(name, rest))


# Options whose value may be left out: (command, flag) -> (what the bare flag stands for, its values).
# ``makd eval --probe`` is ``--probe sgd``; ``--probe quick`` picks the other protocol. Typer's parser
# cannot leave a value out, so the bare flag gets its value written in before parsing.
OPTIONAL_VALUES = {("eval", "--probe"): ("sgd", ("sgd", "quick"))}


def bare_flag_values(name: str | None, args: list[str]) -> list[str]:
    flags = {flag: spec for (command, flag), spec in OPTIONAL_VALUES.items() if command == name}
    if not flags:
        return args
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--":
            return out + list(args[i + 1:])
        if arg in flags and (i + 1 == len(args) or args[i + 1] not in flags[arg][1]):
            out.append(flags[arg][0])
    return out


def recipe_args(ctx, name, command, args):
    """--recipe / --config written into the arguments, --dry-run answered (makd_cli/recipes)."""
    from makd_cli.recipes.cli_hook import apply

    return apply(ctx, name, command, args, plugin_defaults)


def plugin_defaults(command: str, values: dict) -> tuple[dict, set]:
    """The declared defaults of the plug-ins an invocation of ``command`` chooses (by key), and the keys of
    every other plug-in option of the command (not settings of this run): ``--dry-run``'s listing."""
    mine, every = {}, set()
    for kind in kinds_of(command):
        names = chosen(kind, values)
        for plugin, opt in kind.load().all_options():
            every.add(opt.key)
            if plugin in names:
                mine[opt.key] = opt.default
    return mine, every - set(mine)


def plugin_group(app: typer.Typer) -> typer.Typer:
    """``app`` with ``PluginGroup`` as its click group class (its plug-in commands get their options).
    Call it after the commands are defined: it reserves their flags against plug-in options."""
    app.info.cls = type("MakdGroup", (PluginGroup,), {"typer_app": app})
    for info in app.registered_commands:
        reserve_flags(info.name or info.callback.__name__.replace("_", "-"), command_flags(info.callback))
    return app


def build_command(app: typer.Typer, args: list[str]):
    """The click command of ``app`` (plug-in options come in when the subcommand is resolved)."""
    return finite_floats(typer.main.get_command(app))


def one_line(exc) -> str:
    """A usage error as one line: ``makd train: Invalid value for '-b': 0 is not in the range x>=1.``"""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "makd"
    return f"{where}: {message}"
