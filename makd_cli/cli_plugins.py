"""The command line built from the plug-ins: their declared options become flags; usage errors are one line.

``cli.py`` declares the fixed flags with typer. At start-up, ``build_command`` adds to the command
being run every option its plug-ins declare (``makd train``: the methods'; ``gen-questions`` and
``extract``: the language backends'), with the option's type, range and help, so a new method with
an option of its own is one new file. The values given reach the job through ``plugin_options()``.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Optional

import typer

from makd_cli.errors import MakdError
from makd_cli.registry import Option, Registry, option_values

# command -> (module, registry attribute, the flag that chooses the plug-in)
PLUGIN_FLAGS = {
    "train": ("makd_cli.methods.base", "METHODS", "method"),
    "extract": ("makd_cli.teachers.backends", "LANGUAGE_BACKENDS", "backend"),
    "gen-questions": ("makd_cli.teachers.backends", "LANGUAGE_BACKENDS", "backend"),
}

_values: dict = {}  # the plug-in options of this invocation, by key (filled by the command's callback)


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
        text = (f"{opt.help} [--{selector} {'/'.join(owners[flag])}; default: {opt.default}"
                + (f"; {limits}" if limits else "") + "]")
        number = opt.type in (int, float)
        info = typer.Option(None, flag, help=text, min=opt.min if number else None, max=opt.max if number else None,
                            rich_help_panel="Options of the plug-ins")
        params.append(inspect.Parameter(opt.key, inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=Optional[opt.type]))
        hints[opt.key] = Optional[opt.type]
        added[opt.key] = (opt, owners[flag])
    if not added:
        return func

    def command(**kwargs):
        given = {key: kwargs.pop(key) for key in added}
        chosen = _chosen(kwargs.get(selector), selector)
        for key, value in given.items():
            opt, plugins = added[key]
            if value is not None and not set(plugins) & set(chosen):
                raise MakdError(f"{opt.flag} is an option of --{selector} {' or '.join(plugins)}, not of --{selector} "
                                f"{'+'.join(chosen)}")
        _values.clear()
        for name in chosen:
            if name in registry:
                _values.update(option_values(registry.options(name), given))
        return func(**kwargs)

    command.__name__, command.__doc__ = func.__name__, func.__doc__
    command.__signature__ = sig.replace(parameters=params)
    command.__annotations__ = hints
    return command


def build_command(app: typer.Typer, args: list[str]):
    """The click-style command of ``app`` with the plug-in options of the subcommand in ``args`` added.

    Only the subcommand being run gets its plug-ins' options, so ``makd --version`` imports no plug-in.
    """
    name = next((a for a in args if not a.startswith("-")), None)
    found = registry_for(name) if name else None
    info = next((c for c in app.registered_commands if (c.name or c.callback.__name__) == name), None)
    if found is None or info is None:
        return typer.main.get_command(app)
    original = info.callback
    info.callback = with_plugin_options(original, *found)
    try:
        return typer.main.get_command(app)
    finally:
        info.callback = original


def one_line(exc) -> str:
    """A usage error as one line: ``makd train: Invalid value for '-b': 0 is not in the range x>=1.``"""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "makd"
    return f"{where}: {message}"
