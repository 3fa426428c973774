"""Name -> object registries (task kinds, methods, searchers, schedulers, trackers), peft style.

One registration line adds an entry; the study schema's allowed values and the CLI's choices
are read from the registry, so nothing else lists the names.
"""

from __future__ import annotations

import difflib
from typing import Any, Generic, Iterator, Literal, TypeVar

from core.errors import StudyError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> entry mapping whose lookups fail as one-line ``StudyError``s."""

    def __init__(self, what: str) -> None:
        self.what = what  # "task", "method", ...: names the entry in error messages
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str, field: str) -> T:
        """The entry called ``name``; else a StudyError on ``field`` with the nearest name."""
        if name not in self._entries:
            near = difflib.get_close_matches(str(name), list(self._entries), n=1)
            fix = f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(self._entries)}"
            raise StudyError(field, f"unknown {self.what} {name!r}", fix)
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def literal(self) -> Any:
        """``Literal[...]`` of the registered names, for a schema field (as of the call)."""
        return Literal[tuple(self._entries)]  # type: ignore[valid-type]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Any:
        return self._entries.items()

    def values(self) -> Any:
        return self._entries.values()
