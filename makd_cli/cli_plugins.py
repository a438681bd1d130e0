"""The command line built from the plug-ins: their declared options become flags; usage errors are one line.

``cli.py`` declares the fixed flags with typer. When a subcommand is resolved (``makd.main`` and
``CliRunner(app)`` alike), ``PluginGroup`` adds to it every option its plug-ins declare (``makd train``:
the methods' and the training tasks'; ``gen-questions`` and ``extract``: the language backends'), with
the option's type, range and help, so a new method with an option of its own is one new file. Only the
subcommand being run gets them, so ``makd --version`` imports no plug-in. The values given reach the
job through ``plugin_options()``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import typing
from typing import Optional

import typer
from typer.core import TyperGroup

from makd_cli.errors import MakdError
from makd_cli.registry import Option, Registry, option_values

# command -> (module, registry attribute, the flag that chooses the plug-in)
PLUGIN_FLAGS = {
    "train": ("makd_cli.cli_plugins", "TRAIN_PLUGINS", "method"),
    "extract": ("makd_cli.teachers.backends", "LANGUAGE_BACKENDS", "backend"),
    "gen-questions": ("makd_cli.teachers.backends", "LANGUAGE_BACKENDS", "backend"),
}

_values: dict = {}  # the plug-in options of this invocation, by key (filled by the command's callback)


def train_plugins() -> Registry:
    """Every ``--method`` value with the options it declares: the METHODS registry's and the ones a
    training task owns (``lead-ssl``: the moco task's ``--moco-*``)."""
    from makd_cli.methods.base import METHODS
    from makd_cli.train.tasks import TASKS

    names = Registry("method")
    for e in METHODS.entries():
        names.add(e.name, e.obj, e.help, e.options)
    for e in TASKS.entries():
        for method in e.obj.methods:
            names.add(method, e.obj, e.help, e.options)
        if e.options and not e.obj.methods:  # a task chosen by --task (detection): its options follow --task
            names.add(task_owner(e.name), e.obj, e.help, e.options)
    return names


def task_owner(task: str) -> str:
    """The name under which a ``--task``-chosen task's options are listed among the ``--method`` plug-ins."""
    return f"--task {task}"


def _owner_text(selector: str, plugins: list[str]) -> str:
    """``--method kd/dkd`` or ``--task detection``: who declares a flag, as the user selects it."""
    chosen = [p for p in plugins if not p.startswith("--")]
    return " or ".join(([f"--{selector} {'/'.join(chosen)}"] if chosen else []) + [p for p in plugins if p.startswith("--")])


def __getattr__(name: str):
    if name == "TRAIN_PLUGINS":  # built on use: a plug-in a test registers late still shows
        return train_plugins()
    raise AttributeError(name)


def registry_for(command: str) -> tuple[Registry, str] | None:
    if command not in PLUGIN_FLAGS:
        return None
    module, attr, selector = PLUGIN_FLAGS[command]
    return getattr(importlib.import_module(module), attr), selector


def plugin_options() -> dict:
    """Declared options of the chosen plug-ins (given or default), by key (``my_option``)."""
    return dict(_values)


def _chosen(selector_value: str | None, selector: str) -> list[str]:
    if selector == "method":
        return [p.strip() for p in (selector_value or "ce").split("+") if p.strip()]
    return [selector_value or "llama.cpp"]


def _flags(param: inspect.Parameter) -> set[str]:
    decls = getattr(param.default, "param_decls", None) or ()
    names = {d for d in decls if d.startswith("-")}
    return names or {"--" + param.name.replace("_", "-")}


def with_plugin_options(func, registry: Registry, selector: str):
    """``func`` (a typer command) with a typer option for every option ``registry``'s plug-ins declare.

    A flag the command already has (one of its own options) stays the command's. Values are checked
    against the declaration (type, range, choices), then kept for ``plugin_options()``.
    """
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func)
    existing = set().union(*(_flags(p) for p in sig.parameters.values()))
    owners: dict[str, list[str]] = {}
    declared: dict[str, Option] = {}
    for plugin, opt in registry.all_options():
        declared.setdefault(opt.flag, opt)
        owners.setdefault(opt.flag, []).append(plugin)
    added, params = {}, list(sig.parameters.values())
    for flag, opt in declared.items():
        if flag in existing:
            continue
        limits = opt.limits()
        text = (f"{opt.help} [{_owner_text(selector, owners[flag])}; default: {opt.default}"
                + (f"; {limits}" if limits else "") + "]")
        number = opt.type in (int, float)
        switch = opt.type is bool  # a bare --flag (False when absent, which counts as not given)
        info = typer.Option(False if switch else None, flag, help=text, min=opt.min if number else None,
                            max=opt.max if number else None, rich_help_panel="Options of the plug-ins")
        kind = bool if switch else Optional[opt.type]
        params.append(inspect.Parameter(opt.key, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind))
        hints[opt.key] = kind
        added[opt.key] = (opt, owners[flag])
    if not added:
        return func

    def command(**kwargs):
        given = {key: kwargs.pop(key) for key in added}
        given = {key: None if value is False else value for key, value in given.items()}
        chosen = _chosen(kwargs.get(selector), selector)
        if selector == "method" and kwargs.get("task"):
            chosen.append(task_owner(kwargs["task"]))
        for key, value in given.items():
            opt, plugins = added[key]
            if value is not None and not set(plugins) & set(chosen):
                picked = [c for c in chosen if not c.startswith("--")]
                raise MakdError(f"{opt.flag} is an option of {_owner_text(selector, plugins)}, not of "
                                + " ".join([f"--{selector} {'+'.join(picked)}"] + [c for c in chosen if c.startswith("--")]))
        _values.clear()
        for name in chosen:
            if name in registry:
                _values.update(option_values(registry.options(name), given))
        return func(**kwargs)

    command.__name__, command.__doc__ = func.__name__, func.__doc__
    command.__signature__ = sig.replace(parameters=params)
    command.__annotations__ = hints
    return command


class PluginGroup(TyperGroup):
    """The top-level group: a subcommand with plug-ins is rebuilt with their options when it is resolved.

    Resolving happens only for the subcommand being run (not for ``--help`` listings or ``--version``),
    for ``makd.main`` and for ``typer.testing.CliRunner(app)`` alike.
    """

    typer_app: typer.Typer | None = None  # set by ``plugin_group``

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        found = registry_for(name) if name else None
        info = next((c for c in self.typer_app.registered_commands if (c.name or c.callback.__name__) == name), None)
        if found is None or info is None:
            return name, command, recipe_args(ctx, name, command, bare_flag_values(name, rest))
        info = copy.copy(info)
        info.callback = with_plugin_options(info.callback, *found)
        app = self.typer_app
        command = typer.main.get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                                   rich_markup_mode=app.rich_markup_mode)
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

    return apply(ctx, name, command, args)


def plugin_group(app: typer.Typer) -> typer.Typer:
    """``app`` with ``PluginGroup`` as its click group class (its plug-in commands get their options)."""
    app.info.cls = type("MakdGroup", (PluginGroup,), {"typer_app": app})
    return app


def build_command(app: typer.Typer, args: list[str]):
    """The click command of ``app`` (plug-in options come in when the subcommand is resolved)."""
    return typer.main.get_command(app)


def one_line(exc) -> str:
    """A usage error as one line: ``makd train: Invalid value for '-b': 0 is not in the range x>=1.``"""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "makd"
    return f"{where}: {message}"
