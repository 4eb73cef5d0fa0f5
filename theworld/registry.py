"""Named extensions of one kind: the Hub strategies (``hub.hub_strategy``), the data sources (``data.source``) and
the benchmark formats. Adding one is a file that defines it and one ``register`` call; everything that offers a
choice or reads a setting asks the registry, never a list of its own.

An installed package makes its extensions part of the ``theworld`` command by naming the module that registers them
in the ``theworld.extensions`` entry-point group (``pyproject.toml``)::

    [project.entry-points."theworld.extensions"]
    my_strategy = "my_package.my_strategy"

A config option whose values are the registered names is annotated ``module.Name``, where ``module`` serves ``Name``
through :meth:`Registry.choices_getattr`: the CLI's parser reads the annotation when it is built, so its choices (and
``--help``) hold every name registered by then, and a mistyped one is refused as the parser refuses any value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, Literal, TypeVar

from theworld.errors import ConfigError, UserError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Extensions of one kind by name, in the order they were registered. ``option`` is the setting that names one
    (``data.source``), ``kind`` what one is called in messages (``data source``)."""

    def __init__(self, option: str, kind: str):
        self.option = option
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Adds ``entry`` as ``name``; another entry under a name already taken is refused (importing a module
        that registers twice is harmless: the same entry again)."""
        registered = self._entries.get(name)
        if registered is not None and registered is not entry:
            raise ValueError(f"a {self.kind} named {name!r} is registered already: {registered!r}")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"{self.option}={name!r}: no {self.kind} of that name is registered; the registered ones are "
                f"{', '.join(self._entries)}. Import the module that registers it before theworld parses its "
                f"config, or pick one of these."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def choices(self) -> Any:
        """The names registered now, as the ``Literal`` type a parser takes its choices from."""
        return Literal[tuple(self._entries)]

    def choices_getattr(self, attribute: str) -> Callable[[str], Any]:
        """A module's ``__getattr__`` (PEP 562) that answers ``attribute`` with :meth:`choices` at the moment it is
        asked: a dataclass field annotated ``module.<attribute>`` gets the names registered when the parser is
        built, not those of the moment the dataclass was imported."""

        def module_getattr(name: str) -> Any:
            if name == attribute:
                return self.choices()
            raise AttributeError(name)

        return module_getattr


ENTRY_POINT_GROUP = "theworld.extensions"


class ExtensionFailed(UserError):
    """An installed extension's module could not be imported."""


def load_installed_extensions() -> None:
    """Imports the module of every entry point in the ``theworld.extensions`` group of the installed packages:
    each registers its extensions. ``theworld`` calls it before it builds its parser."""
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as err:
            package = entry_point.dist.name if entry_point.dist else "an installed package"
            raise ExtensionFailed(
                f"The theworld extension {entry_point.name!r} of {package} ({entry_point.value}) failed to import: "
                f"{type(err).__name__}: {err}. Fix or reinstall {package}, or uninstall it to run without it."
            ) from err
