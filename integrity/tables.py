"""What a research table under the chain looks like to the encoding: its name,
key and typed columns. The store builds these from its models (one line per
table, ``cryod.daemon.store.chained``); another implementation can write them
down by hand, or read them from a row's own canonical bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .canonical import Kind, encode_row

__all__ = ["TableSpec"]


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, Kind], ...]  # every column, in table order

    def __post_init__(self) -> None:
        names = [c for c, _ in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate column names")
        if not self.key or any(k not in names for k in self.key):
            raise ValueError(f"{self.name}: key {self.key} is not among its columns")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    def typed(self, values: Mapping[str, Any]) -> dict[str, tuple[Kind, Any]]:
        """``{column: (kind, value)}`` for every column (a missing one is an error)."""
        missing = [c for c, _ in self.columns if c not in values]
        if missing:
            raise KeyError(f"{self.name}: no value for {missing}")
        return {c: (kind, values[c]) for c, kind in self.columns}

    def key_of(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[k] for k in self.key)

    def key_map(self, key: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(self.key, key, strict=True))

    def encode(self, values: Mapping[str, Any]) -> bytes:
        return encode_row(self.name, self.key, self.typed(values))
