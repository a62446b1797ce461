"""Registries of plug-ins: the losses, optimizers, learning-rate schedules and data formats a recipe or
``--data`` can name. Each module that provides plug-ins holds its registry and adds to it with a
decorator beside the code, so adding one is one edit; the config schema accepts exactly the
registered names, and error messages and ``--help`` list them with their help."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from keras_cifar.core.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry:
    factory: Any  # what the plug-in's module calls to build it
    help: str  # one line for --help and the README


class Registry:
    """The plug-ins of one kind, in the order they were added."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, Entry] = {}

    def add(self, name: str, help: str) -> Callable[[F], F]:
        """Decorator: register the decorated function or class as `name`."""

        def register(factory: F) -> F:
            if name in self.entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self.entries[name] = Entry(factory, help)
            return factory

        return register

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __getitem__(self, name: str) -> Any:
        """The factory of `name`; a ConfigError lists the registered names."""
        try:
            return self.entries[name].factory
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; use {self}") from None

    def __str__(self) -> str:
        """'a / b / c': the names, as error messages list what is allowed."""
        return " / ".join(self.entries)

    def help(self) -> str:
        """'a (what a does); b (what b does)'."""
        return "; ".join(f"{name} ({entry.help})" for name, entry in self.entries.items())
