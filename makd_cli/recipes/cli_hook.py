"""Where recipes meet the command line: one call from ``PluginGroup.resolve_command``.

It expands ``--recipe`` / ``--config`` into the arguments, answers ``--dry-run`` (every setting and
its source, then exit 0), adds the three flags to the command's ``--help``, and has ``makd train``
write ``OUTPUT/settings.json`` when its run finishes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer

from makd_cli import recipes

HELP_PANEL = "Recipes and config files"


def _meta_params() -> list:
    """``--recipe``, ``--config``, ``--dry-run`` as typer builds them (their values never reach the command's
    callback: they are taken out of the arguments before parsing; here they are only for ``--help``)."""
    names = ", ".join(recipes.recipe_names())

    def meta(recipe: Optional[str] = typer.Option(None, "--recipe", rich_help_panel=HELP_PANEL, help=(
                 f"A paper's settings as its reference code runs them ({names}); NAME-DATASET is layered on when "
                 "--data names a dataset it covers. Flags given win. docs/reproducing.md lists each.")),
             config: Optional[str] = typer.Option(None, "--config", rich_help_panel=HELP_PANEL,
                                                  help="A TOML file of flags (weight-decay = 1e-4); wins over --recipe, loses to flags given."),
             dry_run: bool = typer.Option(False, "--dry-run", rich_help_panel=HELP_PANEL,
                                          help="Print every setting with its source (flag, config, recipe, default) and exit without running.")):
        pass

    app = typer.Typer()
    app.command()(meta)
    params = typer.main.get_command(app).params
    for p in params:
        p.expose_value = False
    return params


def _help_options(command) -> None:
    have = {o for p in command.params for o in getattr(p, "opts", [])}
    command.params.extend(p for p in _meta_params() if p.opts[0] not in have)


def apply(ctx, name: str | None, command, args: list[str], plugin_defaults=lambda name, values: ({}, set())) -> list[str]:
    """The arguments of ``makd NAME`` with the recipe's and config's flags written in (``args`` unchanged for
    other commands). ``--dry-run`` prints the settings and exits here. ``plugin_defaults(name, values)``: the
    declared defaults of the plug-ins the invocation chooses and the keys of the others' options (the CLI's
    ``cli_plugins.plugin_defaults``; passed in, so this package never imports the command line)."""
    if name not in recipes.COMMANDS or command is None:
        return args
    _help_options(command)
    if "--help" in args:
        return args
    expansion = recipes.expand(name, command, args)
    if expansion.dry_run:
        sub = command.make_context(name, list(expansion.args), parent=ctx)
        rows = recipes.settings(sub.params, command.params, expansion, *plugin_defaults(name, sub.params))
        recipes.print_settings(name, rows)
        raise typer.Exit(0)
    if name == "train":
        _record_after(command, name, expansion, plugin_defaults)
    return expansion.args


def _record_after(command, name: str, expansion, plugin_defaults) -> None:
    """Wrap the command's callback: after the run, OUTPUT/settings.json holds every setting and its source."""
    callback = command.callback

    @functools.wraps(callback)
    def run(*a, **params):
        result = callback(*a, **params)
        rows = recipes.settings(params, command.params, expansion, *plugin_defaults(name, params))
        output = params.get("output")
        if output is not None:
            recipes.write_settings(Path(output), recipes.settings_record(name, rows, expansion))
        return result

    command.callback = run
