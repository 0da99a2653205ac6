"""The canonical bytes of a sample batch, one function per encoding version.

``cryod.samples/1`` is the samples table as it is today (one row per polled
value). A batch is the rows one chain entry covers, in ascending ``id``:

``[ s"cryod.samples/1" s"samples" [ s<column>... ] [ <row> ]... ]``, each
row ``[ i<id> <procedure_id> s<console> f<t_utc> f<t_mono> i<probe>
s<channel> <value> s<validity> ]`` in ``SAMPLE_COLUMNS_V1`` order, with the
tokens of ``canonical`` (``N`` for a null procedure_id or value).

A new sample model (a later issue) adds ``encode_sample_batch_v2`` and a new
name in ``ENCODERS``; a chain entry names the encoding it was made with, so
batches written under either version keep verifying.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .canonical import EncodingError, Kind, text_token, value_token

__all__ = [
    "ENCODERS",
    "SAMPLES_V1",
    "SAMPLE_COLUMNS_V1",
    "encode_sample_batch",
    "encode_sample_batch_v1",
]

SAMPLES_V1 = "cryod.samples/1"

#: (column, kind) in the order each row's values are written
SAMPLE_COLUMNS_V1: tuple[tuple[str, Kind], ...] = (
    ("id", Kind.INT),
    ("procedure_id", Kind.INT),
    ("console", Kind.TEXT),
    ("t_utc", Kind.REAL),
    ("t_mono", Kind.REAL),
    ("probe", Kind.INT),
    ("channel", Kind.TEXT),
    ("value", Kind.REAL),
    ("validity", Kind.TEXT),
)

_HEADER_V1 = (
    "["
    + text_token(SAMPLES_V1)
    + text_token("samples")
    + "["
    + "".join(text_token(name) for name, _ in SAMPLE_COLUMNS_V1)
    + "]"
)
_pack = struct.Struct(">d").pack
_pack2 = struct.Struct(">dd").pack  # both times of a row in one call; hex("f", 8) splits them


def _row_v1_checked(row: Sequence[Any]) -> str:
    """The slow path: every value through its kind's token (names what is wrong)."""
    if len(row) != len(SAMPLE_COLUMNS_V1):
        raise EncodingError(f"a sample row has {len(SAMPLE_COLUMNS_V1)} values, not {len(row)}")
    parts = ["["]
    for (name, kind), value in zip(SAMPLE_COLUMNS_V1, row, strict=True):
        try:
            parts.append(value_token(kind, value))
        except EncodingError as exc:
            raise EncodingError(exc.reason, name) from None
    parts.append("]")
    return "".join(parts)


def encode_sample_batch_v1(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows as ``SAMPLE_COLUMNS_V1`` tuples, ascending id -> the batch's bytes.

    The writer calls this for every committed batch (about four a second, a few
    hundred rows each), so the common row is one f-string with its text tokens
    cached per (console, channel, validity) and its two times packed at once;
    anything unusual (a wrong type, a NaN, text that is not valid Unicode)
    takes the checked path, which gives the same bytes or names the column it
    cannot encode.
    """
    texts: dict[tuple[Any, Any, Any], tuple[str, str, str]] = {}
    pids: dict[Any, str] = {None: "N"}
    out = [_HEADER_V1]
    add = out.append
    for row in rows:
        try:
            rid, pid, console, t_utc, t_mono, probe, channel, value, validity = row
            key = (console, channel, validity)
            tokens = texts.get(key)
            if tokens is None:
                if not (type(console) is str and type(channel) is str and type(validity) is str):
                    raise TypeError("text expected")
                tokens = texts[key] = (
                    text_token(console),
                    text_token(channel),
                    text_token(validity),
                )
            pid_token = pids.get(pid)
            if pid_token is None:
                if type(pid) is not int:
                    raise TypeError("integer expected")
                pid_token = pids[pid] = f"i{pid};"
            if (
                type(rid) is int
                and type(probe) is int
                and type(t_utc) is float
                and type(t_mono) is float
                and t_utc == t_utc
                and t_mono == t_mono
                and (value is None or (type(value) is float and value == value))
            ):
                times = _pack2(t_utc + 0.0, t_mono + 0.0).hex("f", 8)
                reading = "N" if value is None else "f" + _pack(value + 0.0).hex()
                add(
                    f"[i{rid};{pid_token}{tokens[0]}f{times}i{probe};"
                    f"{tokens[1]}{reading}{tokens[2]}]"
                )
                continue
        except (TypeError, ValueError):
            pass
        add(_row_v1_checked(row))
    add("]")
    return "".join(out).encode("utf-8")


#: encoding name -> encoder; a chain entry's ``encoding`` picks one
ENCODERS: dict[str, Callable[[Iterable[Sequence[Any]]], bytes]] = {
    SAMPLES_V1: encode_sample_batch_v1,
}


def encode_sample_batch(rows: Iterable[Sequence[Any]], encoding: str = SAMPLES_V1) -> bytes:
    try:
        encoder = ENCODERS[encoding]
    except KeyError:
        raise EncodingError(f"unknown sample encoding {encoding!r}") from None
    return encoder(rows)
