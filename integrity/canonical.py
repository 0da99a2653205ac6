"""``cryod.canon/1``: the canonical bytes of a value, a row and a chain entry.

One byte string per value, whatever database or language produced it, so a
digest computed here is the digest another implementation (the study
collector on PostgreSQL, a receiver of the record channel) computes from the
same record. docs/integrity.md is the specification, with test vectors
(``vectors.json``); this module is its reference implementation.

Tokens (each one self-delimiting, so a byte string parses back without a
schema):

==========  ===========================  ====================================
token       form                         meaning
==========  ===========================  ====================================
``N``       ``N``                        null (SQL NULL or JSON null)
``T``/``F`` ``T`` / ``F``                true / false
``i``       ``i`` decimal ``;``          integer: ``-``? digits, no leading 0
``f``       ``f`` 16 lowercase hex       real: IEEE 754 binary64, big-endian
                                         bits; -0 is written as +0; no NaN
``s``       ``s`` length ``:`` UTF-8     text; length in bytes, decimal
``t``       ``t`` 27 characters          UTC time ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
``[`` ``]`` ``[`` tokens ``]``           list
``{`` ``}`` ``{`` (``s`` key, value)* ``}`` map, keys sorted by UTF-8 bytes
==========  ===========================  ====================================

A row (``encode_row``) is
``[ s"cryod.row/1" s<table> [ s<key column>... ] { s<column> <value>... } ]``.
A column's *kind* (``Kind``) picks its token: ``int`` -> ``i``, ``real`` ->
``f``, ``text`` -> ``s``, ``time`` -> ``t``, ``bool`` -> ``T``/``F``,
``json`` -> the value's JSON structure (objects as maps, arrays as lists,
every JSON number as ``f``, as I-JSON reads it). Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CANON",
    "ROW_ENCODING",
    "DecodedRow",
    "EncodingError",
    "Kind",
    "decode",
    "decode_row",
    "encode_json",
    "encode_row",
    "format_time",
    "int_token",
    "json_value_token",
    "real_token",
    "text_token",
    "time_token",
    "value_token",
]

#: the token grammar (this module)
CANON = "cryod.canon/1"
#: the row layout built on it
ROW_ENCODING = "cryod.row/1"

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_DOUBLE = struct.Struct(">d")


class Kind(enum.StrEnum):
    """What a column holds; picks the token its values are written as."""

    INT = "int"
    REAL = "real"
    TEXT = "text"
    TIME = "time"
    BOOL = "bool"
    JSON = "json"


class EncodingError(ValueError):
    """A value has no canonical form for its kind (names the column when known)."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message if column is None else f"column {column}: {message}")
        self.column = column
        self.reason = message


# ---- scalar tokens -------------------------------------------------------------------
def int_token(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EncodingError(f"an integer was expected, not {type(value).__name__}")
    return f"i{value};"


def real_token(value: float) -> str:
    """IEEE 754 binary64 bits in hex; ``+ 0.0`` turns -0.0 into +0.0 (as SQLite may)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EncodingError(f"a number was expected, not {type(value).__name__}")
    x = float(value)
    if x != x:
        raise EncodingError("NaN has no canonical form (SQLite stores it as NULL)")
    return "f" + _DOUBLE.pack(x + 0.0).hex()


def text_token(value: str) -> str:
    if not isinstance(value, str):
        raise EncodingError(f"text was expected, not {type(value).__name__}")
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise EncodingError(f"text is not valid Unicode: {exc.reason}") from None
    return f"s{n}:{value}"


def format_time(value: dt.datetime) -> str:
    """The one text form of a UTC time (microseconds, ``Z``)."""
    if value.tzinfo is None:
        raise EncodingError("a time must be timezone-aware")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def time_token(value: str | dt.datetime) -> str:
    text = format_time(value) if isinstance(value, dt.datetime) else value
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise EncodingError("a time must be UTC text YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return "t" + text


def _bool_token(value: Any) -> str:
    # SQLite keeps booleans as 0/1; nothing else is a boolean
    if value is True or (type(value) is int and value == 1):
        return "T"
    if value is False or (type(value) is int and value == 0):
        return "F"
    raise EncodingError(f"a boolean (or 0/1) was expected, not {value!r}")


def json_value_token(value: Any) -> str:
    """A JSON value's structure: objects as maps, arrays as lists, numbers as reals."""
    if value is None:
        return "N"
    if value is True:
        return "T"
    if value is False:
        return "F"
    if isinstance(value, str):
        return text_token(value)
    if isinstance(value, (int, float)):
        return real_token(value)
    if isinstance(value, Mapping):
        parts = ["{"]
        for key in _sorted_keys(value):
            parts.append(text_token(key))
            parts.append(json_value_token(value[key]))
        parts.append("}")
        return "".join(parts)
    if isinstance(value, (list, tuple)):
        return "[" + "".join(json_value_token(v) for v in value) + "]"
    raise EncodingError(f"{type(value).__name__} is not a JSON value")


def _sorted_keys(mapping: Mapping[Any, Any]) -> list[str]:
    keys = list(mapping)
    if not all(isinstance(k, str) for k in keys):
        raise EncodingError("map keys must be text")
    return sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass"))


def encode_json(value: Any) -> bytes:
    """The canonical bytes of a JSON value (used for chain-entry payloads)."""
    return json_value_token(value).encode("utf-8")


_BY_KIND: dict[Kind, Callable[[Any], str]] = {
    Kind.INT: int_token,
    Kind.REAL: real_token,
    Kind.TEXT: text_token,
    Kind.TIME: time_token,
    Kind.BOOL: _bool_token,
    Kind.JSON: json_value_token,
}


def value_token(kind: Kind | str, value: Any) -> str:
    """One column value as its kind's token; ``None`` is ``N`` whatever the kind."""
    if value is None:
        return "N"
    return _BY_KIND[Kind(kind)](value)


# ---- rows ------------------------------------------------------------------------------
def encode_row(
    table: str, key: Sequence[str], columns: Mapping[str, tuple[Kind | str, Any]]
) -> bytes:
    """The canonical bytes of one row: table, key column names, every column's value.

    ``columns`` maps each column name to ``(kind, value)``; the key columns
    must be among them. An ``EncodingError`` names the column that failed.
    """
    missing = [k for k in key if k not in columns]
    if missing:
        raise EncodingError(f"key columns {missing} are not among the row's columns")
    parts = ["[", text_token(ROW_ENCODING), text_token(table), "["]
    parts.extend(text_token(k) for k in key)
    parts.append("]{")
    for name in _sorted_keys(columns):
        kind, value = columns[name]
        try:
            token = value_token(kind, value)
        except EncodingError as exc:
            raise EncodingError(exc.reason, name) from None
        parts.append(text_token(name))
        parts.append(token)
    parts.append("}]")
    return "".join(parts).encode("utf-8")


# ---- decoding (for receivers: the bytes describe themselves) ---------------------------
@dataclass(frozen=True, slots=True)
class Time:
    """A ``t`` token decoded: the UTC time text, kept apart from plain text."""

    text: str


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.i = 0

    def fail(self, why: str) -> EncodingError:
        return EncodingError(f"malformed canonical bytes at offset {self.i}: {why}")

    def peek(self) -> int:
        if self.i >= len(self.data):
            raise self.fail("unexpected end")
        return self.data[self.i]

    def until(self, stop: bytes) -> bytes:
        j = self.data.find(stop, self.i)
        if j < 0:
            raise self.fail(f"no {stop.decode()!r}")
        out = self.data[self.i : j]
        self.i = j + 1
        return out

    def token(self) -> Any:
        c = chr(self.peek())
        self.i += 1
        if c == "N":
            return None
        if c == "T":
            return True
        if c == "F":
            return False
        if c == "i":
            digits = self.until(b";")
            if not re.fullmatch(rb"-?(0|[1-9][0-9]*)", digits) or digits == b"-0":
                raise self.fail("bad integer")
            return int(digits)
        if c == "f":
            raw = self.data[self.i : self.i + 16]
            self.i += 16
            if not re.fullmatch(rb"[0-9a-f]{16}", raw):
                raise self.fail("bad real")
            return _DOUBLE.unpack(bytes.fromhex(raw.decode()))[0]
        if c == "s":
            length = self.until(b":")
            if not re.fullmatch(rb"0|[1-9][0-9]*", length):
                raise self.fail("bad text length")
            n = int(length)
            raw = self.data[self.i : self.i + n]
            if len(raw) != n:
                raise self.fail("text runs past the end")
            self.i += n
            return raw.decode("utf-8")
        if c == "t":
            raw = self.data[self.i : self.i + 27]
            self.i += 27
            text = raw.decode("ascii", "replace")
            if not _TIME.fullmatch(text):
                raise self.fail("bad time")
            return Time(text)
        if c == "[":
            items = []
            while self.peek() != ord("]"):
                items.append(self.token())
            self.i += 1
            return items
        if c == "{":
            out: dict[str, Any] = {}
            while self.peek() != ord("}"):
                k = self.token()
                if not isinstance(k, str) or k in out:
                    raise self.fail("map keys must be distinct text")
                out[k] = self.token()
            self.i += 1
            return out
        raise self.fail(f"unknown token {c!r}")


def decode(data: bytes) -> Any:
    """Parse canonical bytes back into values (times as ``Time``); strict."""
    r = _Reader(data)
    value = r.token()
    if r.i != len(data):
        raise r.fail("trailing bytes")
    return value


@dataclass(frozen=True, slots=True)
class DecodedRow:
    encoding: str
    table: str
    key: tuple[str, ...]
    columns: dict[str, tuple[Kind, Any]]  # kinds as the tokens show them

    def key_values(self) -> tuple[Any, ...]:
        return tuple(self.columns[k][1] for k in self.key)


def _kind_of(value: Any) -> tuple[Kind, Any]:
    if isinstance(value, Time):
        return Kind.TIME, value.text
    if isinstance(value, bool):
        return Kind.BOOL, value
    if isinstance(value, int):
        return Kind.INT, value
    if isinstance(value, float):
        return Kind.REAL, value
    if isinstance(value, str):
        return Kind.TEXT, value
    return Kind.JSON, value  # None, lists and maps re-encode the same under json


def decode_row(data: bytes) -> DecodedRow:
    """A row's canonical bytes back into table, key and typed columns; re-encoding
    the result with ``encode_row`` gives the same bytes."""
    value = decode(data)
    if not (
        isinstance(value, list)
        and len(value) == 4
        and value[0] == ROW_ENCODING
        and isinstance(value[1], str)
        and isinstance(value[2], list)
        and all(isinstance(k, str) for k in value[2])
        and isinstance(value[3], dict)
    ):
        raise EncodingError(f"not a {ROW_ENCODING} row")
    columns = {name: _kind_of(v) for name, v in value[3].items()}
    return DecodedRow(value[0], value[1], tuple(value[2]), columns)
