"""One registry mechanism for every plug-in kind (dataset, student, method, backend, control, view, strategy).

A plug-in is one decorated object in one file::

    @register_method("mine", options=[Option("my-weight", float, 1.0, "weight of my term", min=0)])
    class Mine(MethodTerm): ...

A registry made with ``package=`` imports every module of that package the first time it is asked
for its contents, so adding a plug-in never means editing a list. Options a plug-in declares become
command-line flags (``--my-weight``) with their type, range and help (see ``cli.py``); their values
reach the plug-in by key (``my_weight``) in the options dict it is given.
"""

from __future__ import annotations

import importlib
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
        bad = (self.choices and value not in self.choices) or (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max)
        if bad:
            raise MakdError(f"{self.flag} {value!r} is out of range: {self.limits()}")
        return value

    def describe(self) -> dict:
        return {"flag": self.flag, "type": self.type.__name__, "default": self.default, "help": self.help,
                "limits": self.limits()}


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str
    options: tuple[Option, ...] = ()


class Registry(Generic[T]):
    """Name -> plug-in. ``package``: import every module in it on first use (discovery, no hand-kept list)."""

    def __init__(self, what: str, package: str | None = None, skip: tuple[str, ...] = ()):
        self.what = what
        self.package = package
        self.skip = set(skip)
        self._entries: dict[str, Entry[T]] = {}
        self._discovered = package is None

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
        text = help or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
        self._entries[name] = Entry(name, obj, text, opts)
        return obj

    def unregister(self, name: str) -> None:
        """Remove a plug-in (tests that register one of their own clean up with this)."""
        self._entries.pop(name, None)

    # -- discovery ------------------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # before importing: a module may ask this registry for names
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_") and mod.name not in self.skip:
                importlib.import_module(f"{self.package}.{mod.name}")

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
