"""Recipes and config files: TOML files of command-line flags, expanded into the arguments before parsing.

``makd train --recipe makd`` (a file shipped in this package) or ``--config my.toml`` (a user's file)
maps FLAG NAMES, as typed on the command line without the dashes, to values::

    [train]
    weight-decay = 1e-4   # mdistiller/engine/cfg.py:51
    select-by = "test-acc"

Keys at the top level apply to whichever command runs; ``[train]``, ``[extract]`` and
``[gen-questions]`` tables to that command only. The file's flags are written into the argument
list before the parser sees it, so every flag works, the plug-ins' options too, whatever stores them
internally; a flag given on the command line wins over the config file, which wins over the recipe.

``--recipe NAME`` also layers ``NAME-DATASET.toml`` when one exists for ``--data DATASET:...``
(LaViD's lambda differs per dataset). ``--dry-run`` prints every setting of the command with its
source (flag, config, recipe, default) and exits without running; a ``makd train`` run records the
same in ``OUTPUT/settings.json`` (docs/formats.md).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from makd_cli.errors import MakdError

COMMANDS = ("train", "extract", "gen-questions", "eval")  # the commands that take --recipe / --config
SETTINGS_FILE = "settings.json"
SETTINGS_VERSION = 1
_META = {"--recipe", "--config", "--dry-run"}


@dataclass
class Layer:
    """One file's flags: where they come from (``recipe makd``, ``config run.toml``) and the reference of each."""

    source: str
    path: str
    flags: dict  # flag name (no dashes) -> value
    notes: dict = field(default_factory=dict)  # flag name -> the comment beside it (the reference file and line)


@dataclass
class Expansion:
    command: str
    args: list[str]  # the arguments with the files' flags written in
    given: set[str]  # parameter names given on the command line
    layered: dict  # parameter name -> (Layer, flag)
    dry_run: bool = False
    recipe: str | None = None
    config: str | None = None


_last: Expansion | None = None  # this invocation's expansion (for the run's settings.json)


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".toml"))


def _recipe_text(name: str) -> tuple[str, str] | None:
    f = resources.files(__package__) / f"{name}.toml"
    return (f.read_text(encoding="utf-8"), f"makd_cli/recipes/{name}.toml") if f.is_file() else None


def _comments(text: str, command: str) -> dict:
    """``key = value  # comment`` -> {key: comment} for the top level and ``[command]``'s table (a key's comment
    may also be the comment lines just above it); other tables' comments are not this command's."""
    notes, above, table = {}, [], None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            above.append(s.lstrip("# ").strip())
            continue
        header = re.match(r"^\[([^\]]+)\]", s)
        if header:
            table, above = header.group(1).strip(), []
            continue
        m = re.match(r"""^([A-Za-z0-9_-]+)\s*=\s*(?:"[^"]*"|'[^']*'|\[[^\]]*\]|[^#]*?)\s*(?:#\s*(.*))?$""", s)
        if m and table in (None, command):
            notes[m.group(1)] = m.group(2) or " ".join(above)
        above = []
    return notes


def _parse(text: str, where: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MakdError(f"{where} is not valid TOML ({exc})") from None


def _flags_for(data: dict, command: str, where: str) -> dict:
    flags = {k: v for k, v in data.items() if not isinstance(v, dict)}
    known_tables = set(COMMANDS)
    for key, value in data.items():
        if isinstance(value, dict) and key not in known_tables:
            raise MakdError(f"{where}: table [{key}] is not a command; use [{'], ['.join(COMMANDS)}] or top-level flags")
    flags.update(data.get(command, {}))
    flags.pop("base", None)
    return flags


def load_recipe(name: str, command: str, dataset: str | None = None) -> list[Layer]:
    """The layers of ``--recipe NAME`` for ``command``: its ``base`` recipes first, then NAME, then NAME-DATASET."""
    layers, seen, chain = [], set(), []

    def add(n: str, required: bool) -> None:
        if n in chain:
            raise MakdError(f"recipe {n} includes itself through base = ...")
        if n in seen:  # already layered (lavid-cub's base lavid, after --recipe lavid)
            return
        seen.add(n)
        chain.append(n)
        found = _recipe_text(n)
        if found is None:
            chain.pop()
            if required:
                raise MakdError(f"--recipe {n!r} is unknown; recipes: {', '.join(recipe_names())}")
            return
        text, path = found
        data = _parse(text, path)
        if data.get("base"):
            add(str(data["base"]), True)
        layers.append(Layer(f"recipe {n}", path, _flags_for(data, command, path), _comments(text, command)))
        chain.pop()

    add(name, True)
    if dataset and "-" not in name:
        add(f"{name}-{dataset}", False)
    return layers


def load_config(path: str, command: str) -> Layer:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MakdError(f"--config {path}: no such file (give a TOML file of flags, e.g. weight-decay = 1e-4)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MakdError(f"--config {path} cannot be read ({type(exc).__name__})") from None
    return Layer(f"config {path}", str(p), _flags_for(_parse(text, f"--config {path}"), command, f"--config {path}"), _comments(text, command))


def _take_meta(args: list[str]) -> tuple[list[str], dict]:
    """``args`` without --recipe/--config/--dry-run (before a ``--``), and their values."""
    rest, meta, i = [], {}, 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        name, eq, value = a.partition("=")
        if name in _META:
            if name == "--dry-run":
                if eq:
                    raise MakdError("--dry-run takes no value")
                meta["dry_run"] = True
            else:
                if not eq:
                    if i + 1 >= len(args):
                        raise MakdError(f"{name} needs a value ({'a recipe name' if name == '--recipe' else 'a TOML file'})")
                    i, value = i + 1, args[i + 1]
                if name[2:] in meta:
                    raise MakdError(f"{name} is given twice; give one (a config file can set everything)")
                meta[name[2:]] = value
        else:
            rest.append(a)
        i += 1
    return rest, meta


def _opts(param) -> list[str]:
    return list(param.opts) + list(getattr(param, "secondary_opts", []) or [])


def _given(params, args: list[str]) -> set[str]:
    """The parameters the command line sets (any of their spellings, ``--flag=v`` and ``-bV`` too)."""
    given = set()
    for a in args:
        if a == "--":
            break
        head = a.split("=", 1)[0]
        for p in params:
            for o in _opts(p):
                if head == o or (len(o) == 2 and not o.startswith("--") and a.startswith(o) and not a.startswith("--")):
                    given.add(p.name)
    return given


def _as_args(flag: str, param, value, where: str) -> list[str]:
    opt = ("-" if len(flag) == 1 else "--") + flag
    if getattr(param, "is_flag", False) or isinstance(value, bool):
        if not isinstance(value, bool):
            raise MakdError(f"{where}: {flag} is a switch; give true or false")
        if value:
            return [opt] if opt in param.opts else [param.opts[-1]]
        off = [o for o in getattr(param, "secondary_opts", []) or []]
        return off[:1]  # false: the switch's off spelling, or nothing (off is its default)
    if isinstance(value, list):
        if getattr(param, "multiple", False):
            return [x for v in value for x in (opt, _text(v))]
        return [opt, ",".join(_text(v) for v in value)]
    if isinstance(value, dict):
        raise MakdError(f"{where}: {flag} = a table; give a value")
    return [opt, _text(value)]


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def expand(command: str, click_command, args: list[str]) -> Expansion:
    """``args`` with the flags of ``--recipe`` / ``--config`` written in where the command line does not set them."""
    global _last
    rest, meta = _take_meta(list(args))
    params = [p for p in click_command.params if getattr(p, "opts", None)]
    by_flag = {o.lstrip("-"): p for p in params for o in _opts(p) if o.startswith("--") or len(o) == 2}  # n = 50 is -n 50
    given = _given(params, rest)
    layers: list[Layer] = []
    if "recipe" in meta:
        layers += load_recipe(meta["recipe"], command, _dataset_name(rest))
    if "config" in meta:
        layers.append(load_config(meta["config"], command))
    layered: dict = {}
    for layer in layers:  # later layers win: recipe, recipe-dataset, config
        for flag, value in layer.flags.items():
            param = by_flag.get(flag)
            if param is None:
                raise MakdError(f"{layer.source}: makd {command} has no flag --{flag}"
                                + (" (use a [train], [extract] or [gen-questions] table for another command's flags)"
                                   if layer.source.startswith("config") else ""))
            layered[param.name] = (layer, flag)
    extra = []
    for name, (layer, flag) in layered.items():
        if name not in given:
            extra += _as_args(flag, by_flag[flag], layer.flags[flag], layer.source)
    cut = rest.index("--") if "--" in rest else len(rest)
    out = rest[:cut] + extra + rest[cut:]
    _last = Expansion(command, out, given, {k: v for k, v in layered.items() if k not in given}, bool(meta.get("dry_run")),
                      meta.get("recipe"), meta.get("config"))
    return _last


def _dataset_name(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        value = a[len("--data="):] if a.startswith("--data=") else (args[i + 1] if a == "--data" and i + 1 < len(args) else None)
        if value:
            name = value.split(":", 1)[0] if ":" in value else None
            return name
    return None


NOT_SETTINGS = {"help", "install_completion", "show_completion"}


def settings(ctx_params: dict, params, expansion: Expansion, declared: dict | None = None, other_plugins: set | None = None) -> list[dict]:
    """Every setting of the command: flag, value, source and the reference a recipe gives for it. ``declared``:
    the chosen plug-ins' option defaults; ``other_plugins``: option keys of plug-ins not chosen (left out)."""
    declared, other_plugins = declared or {}, other_plugins or set()
    rows = []
    for p in params:
        if (not getattr(p, "opts", None) or p.name in NOT_SETTINGS or not getattr(p, "expose_value", True)
                or p.name in other_plugins):
            continue
        flag = next((o for o in p.opts if o.startswith("--")), p.opts[0])
        value = ctx_params.get(p.name)
        value = getattr(value, "value", value)  # Enum
        if p.name in expansion.given:
            source, note = "flag", ""
        elif p.name in expansion.layered:
            layer, key = expansion.layered[p.name]
            source, note = layer.source, layer.notes.get(key, "")
        else:
            source, note = "default", ""
            if value in (None, False) and p.name in declared:  # a plug-in option left out: the plug-in's default
                value = declared[p.name]
        rows.append({"flag": flag, "value": _jsonable(value), "source": source, "reference": note})
    return rows


def _jsonable(value):
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def print_settings(command: str, rows: list[dict]) -> None:
    from makd_cli.cli_output import out

    out.print(f"makd {command} --dry-run: {len(rows)} settings, each with its source (nothing runs)", highlight=False, markup=False)
    width = max(len(r["flag"]) for r in rows)
    vwidth = min(24, max(len(json.dumps(r["value"])) for r in rows))
    for r in rows:
        ref = f"  ({r['reference']})" if r["reference"] else ""
        out.print(f"  {r['flag']:<{width}}  {json.dumps(r['value']):<{vwidth}}  [{r['source']}]{ref}",
                  highlight=False, soft_wrap=True, markup=False)


def settings_record(command: str, rows: list[dict], expansion: Expansion) -> dict:
    return {"format_version": SETTINGS_VERSION, "command": command, "recipe": expansion.recipe, "config": expansion.config,
            "settings": {r["flag"]: {"value": r["value"], "source": r["source"], **({"reference": r["reference"]} if r["reference"] else {})}
                         for r in rows}}


def write_settings(folder: Path, record: dict) -> None:
    from makd_cli.fileio import atomic_write_text

    if folder.is_dir():
        atomic_write_text(folder / SETTINGS_FILE, json.dumps(record, indent=1) + "\n")
