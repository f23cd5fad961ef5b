"""A small typed registry: names map to factories, registered with a decorator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories).

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(): ...
    >>> MODELS.get("tiny") is tiny
    True
    """

    def __init__(self, kind: str, ordered: bool = False) -> None:
        self.kind = kind
        self.ordered = ordered  # names in registration order (else sorted)
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``."""

        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The object registered under ``name``; an error listing valid names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self.names()) or "(none registered)"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items) if self.ordered else sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
