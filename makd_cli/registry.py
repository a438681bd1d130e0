"""One registry mechanism for every plug-in kind (dataset, student, method, backend, control, view, strategy).

A plug-in is one decorated object in one file::

    @register_method("mine", options=[Option("my-weight", float, 1.0, "weight of my term", min=0)])
    class Mine(MethodTerm): ...

A registry made with ``package=`` imports every module of that package the first time it is asked
for its contents, so adding a plug-in never means editing a list; plug-ins of installed distributions
come in through the ``makd.plugins`` entry-point group (``load_entry_points``), loaded with the
built-in ones. Options a plug-in declares become flags (``--my-weight``) of the commands its kind
serves (``KINDS``), with their type, range and help; their values reach the plug-in by key
(``my_weight``) when it is built, and are recorded under the plug-in's name, never in a command's own
fields. A declared flag that a command already has, or that another plug-in of the same command
declares differently, is refused when the plug-in is registered.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from makd_cli.errors import MakdError

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """A setting a plug-in declares: ``name`` is the flag without dashes (``batch-size``)."""

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        return "--" + self.name

    def limits(self) -> str:
        """The accepted values in words, for ``--help`` and error messages ("" when anything goes)."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.min is not None and self.max is not None:
            return f"{self.min} to {self.max}"
        if self.min is not None:
            return f"at least {self.min}"
        if self.max is not None:
            return f"at most {self.max}"
        return ""

    def check(self, value: Any) -> Any:
        """The value converted to the option's type; a value outside its range is a ``MakdError``."""
        if value is None:
            return None
        try:
            value = self.type(value)
        except (TypeError, ValueError):
            raise MakdError(f"{self.flag} {value!r} is not a valid {self.type.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise MakdError(f"{self.flag} {value!r} is not a finite number")
        bad = (self.choices and value not in self.choices) or (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max)
        if bad:
            raise MakdError(f"{self.flag} {value!r} is out of range: {self.limits()}")
        return value

    def describe(self) -> dict:
        return {"flag": self.flag, "type": self.type.__name__, "default": self.default, "help": self.help,
                "limits": self.limits()}


@dataclass(frozen=True)
class Kind:
    """A kind of plug-in: where its registry lives, the commands its plug-ins' options join, and the
    flag that chooses a plug-in of it (how a user selects it; ``makd plugins`` and ``--help`` say so)."""

    name: str
    registry: str  # "module:ATTRIBUTE"
    commands: tuple[str, ...]
    selector: str

    def load(self) -> "Registry":
        module, _, attr = self.registry.partition(":")
        return getattr(importlib.import_module(module), attr)


# The one list of plug-in kinds (``makd plugins``, the CLI's plug-in options, the collision checks).
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("dataset", "makd_cli.data.registry:DATASETS", ("train", "extract"), "--data"),
    Kind("student", "makd_cli.students.build:STUDENTS", ("train",), "--student"),
    Kind("method", "makd_cli.methods.base:METHODS", ("train",), "--method"),
    Kind("task", "makd_cli.train.tasks:TASKS", ("train",), "--task"),
    Kind("control", "makd_cli.controls:CONTROLS", ("train",), "--control"),
    Kind("backend", "makd_cli.teachers.backends:LANGUAGE_BACKENDS", ("extract", "gen-questions"), "--backend"),
    Kind("multimodal-backend", "makd_cli.teachers.backends:MULTIMODAL_BACKENDS", ("extract",), "--mllm"),
    Kind("teacher-kind", "makd_cli.extract.kinds:TEACHER_KINDS", ("extract",), "--llm/--mllm/--clip/--teacher"),
    Kind("teacher", "makd_cli.controls:CONTROL_TEACHERS", ("extract",), "--teacher"),
    Kind("view", "makd_cli.inspect.views:VIEWS", ("inspect",), "--view"),
    Kind("strategy", "makd_cli.select:STRATEGIES", ("select",), "--strategy"),
    Kind("evaluator", "makd_cli.evaluate.evaluators:EVALUATORS", ("eval",), "the checkpoint's task"),
)}

# command -> flag -> what declares it: the command itself ("makd train") or a plug-in ("method kd"), and
# the declaration (None for the command's own flags). Filled as commands reserve their flags and
# plug-ins register; a collision is refused at whichever comes second.
_FLAGS: dict[str, dict[str, tuple[str, "Option | None"]]] = {}


def _claim(command: str, flag: str, owner: str, opt: "Option | None") -> None:
    held = _FLAGS.setdefault(command, {}).get(flag)
    if held is None:
        _FLAGS[command][flag] = (owner, opt)
        return
    holder, declared = held
    if holder == owner or (opt is not None and declared is not None and declared == opt):
        return  # the same declaration shared by several plug-ins (the KD family's --kd-temperature)
    what = "is a flag of `makd " + command + "` itself" if declared is None else f"is declared differently by {holder}"
    raise MakdError(f"{owner}: option {flag} {what}; rename the plug-in's option")


def reserve_flags(command: str, flags) -> None:
    """The flags ``makd COMMAND`` declares itself: no plug-in option may take one of them."""
    for flag in flags:
        _claim(command, flag, f"makd {command}", None)


def _commands_of(kind: str | None) -> tuple[str, ...]:
    return KINDS[kind].commands if kind in KINDS else ()


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str
    options: tuple[Option, ...] = ()


class Registry(Generic[T]):
    """Name -> plug-in. ``package``: import every module in it on first use (discovery, no hand-kept list)."""

    def __init__(self, what: str, package: str | None = None, skip: tuple[str, ...] = (), kind: str | None = None,
                 modules: tuple[str, ...] = ()):
        self.what = what
        self.package = package
        self.modules = tuple(modules)  # plug-in modules outside ``package`` (imported by name on first use)
        self.skip = set(skip)
        self.kind = kind  # its KINDS entry: the commands whose flags its options join
        self._entries: dict[str, Entry[T]] = {}
        self._discovered = False

    # -- registration ---------------------------------------------------------------------
    def register(self, name: str, help: str = "", options=()) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, help, options)
            return obj

        return deco

    def add(self, name: str, obj: T, help: str = "", options=()) -> T:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} registered twice")
        opts = tuple(options)
        if not all(isinstance(o, Option) for o in opts):
            raise TypeError(f"{self.what} {name!r}: options must be Option(...) declarations")
        keys = [o.key for o in opts]
        if len(set(keys)) != len(keys):
            raise MakdError(f"{self.what} {name!r} declares an option twice")
        for command in _commands_of(self.kind):
            for opt in opts:
                _claim(command, opt.flag, f"{self.kind} {name!r}", opt)
        text = help or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
        self._entries[name] = Entry(name, obj, text, opts)
        return obj

    def unregister(self, name: str) -> None:
        """Remove a plug-in (tests that register one of their own clean up with this)."""
        entry = self._entries.pop(name, None)
        owner = f"{self.kind} {name!r}"
        for command in _commands_of(self.kind) if entry else ():
            for opt in entry.options:
                if _FLAGS.get(command, {}).get(opt.flag, (None,))[0] == owner:
                    del _FLAGS[command][opt.flag]

    # -- discovery ------------------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # before importing: a module may ask this registry for names
        if self.package is not None:
            pkg = importlib.import_module(self.package)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_") and mod.name not in self.skip:
                    importlib.import_module(f"{self.package}.{mod.name}")
        for module in self.modules:
            importlib.import_module(module)
        load_entry_points()

    # -- lookup ---------------------------------------------------------------------------
    def entry(self, name: str) -> Entry[T]:
        self._discover()
        try:
            return self._entries[name]
        except KeyError:
            raise MakdError(
                f"unknown {self.what} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def options(self, name: str) -> tuple[Option, ...]:
        return self.entry(name).options

    def all_options(self) -> list[tuple[str, Option]]:
        """(plug-in name, option) for every declared option, in name order."""
        return [(e.name, o) for e in self.entries() for o in e.options]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def describe(self) -> dict[str, str]:
        return {e.name: e.help for e in self.entries()}

    def describe_full(self) -> dict[str, dict]:
        """Name -> help and declared options (``makd plugins --json``)."""
        return {e.name: {"help": e.help, "options": [o.describe() for o in e.options]} for e in self.entries()}

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def option_values(declared, given: dict) -> dict:
    """Every declared option's checked value by key: the one given, else its default."""
    values = {}
    for opt in declared:
        raw = given.get(opt.key)
        values[opt.key] = opt.check(raw) if raw is not None else opt.default
    return values


ENTRY_POINT_GROUP = "makd.plugins"
_entry_points_loaded = False


def load_entry_points() -> list[str]:
    """Import every module an installed distribution names in the ``makd.plugins`` entry-point group
    (``[project.entry-points."makd.plugins"] mine = "makd_mine"``): its decorators register its
    methods, backends, datasets or views, with their options, as the built-in ones do. Once per
    process; a plug-in that fails to import is one line naming its distribution."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except MakdError:
            raise
        except Exception as exc:  # a broken third-party package: say which, never a traceback
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            raise MakdError(f"the makd plug-in {ep.name!r} ({ep.value}, distribution {dist}) failed to load: "
                            f"{type(exc).__name__}: {exc}; fix or uninstall it") from None
        loaded.append(ep.name)
    return loaded


def reset_entry_points() -> None:
    """Let the next registry lookup read the entry points again (tests that install a plug-in)."""
    global _entry_points_loaded
    _entry_points_loaded = False
