"""The canonical bytes of a sample batch, one function per encoding version.

``cryod.samples/1`` is the samples table as it is today (one row per polled
value). A batch is the rows one chain entry covers, in ascending ``id``:

``[ s"cryod.samples/1" s"samples" [ s<column>... ] [ <row> ]... ]``, each
row ``[ i<id> <procedure_id> s<console> f<t_utc> f<t_mono> i<probe>
s<channel> <value> s<validity> ]`` in ``SAMPLE_COLUMNS_V1`` order, with the
tokens of ``canonical`` (``N`` for a null procedure_id or value).

``cryod.samples/2`` is the compact model of revision 0006 (docs/data-model.md
"Samples"): a batch lists polls, ascending ``id``:

``[ s"cryod.samples/2" s"sample_polls" [ s<column>... ] [ <poll> ]... ]``, each
poll ``[ i<id> <procedure_id> s<console> f<t_utc> f<t_mono> i<full_state>
(<value> <code>)x4 [ <probe>... ] [ <state>... ] ]`` with the four console
channels in ``POLL_ANALOG_V2`` order, each probe ``[ i<probe> <tip_c> <tip_v>
<return_kpa> <return_v> ]`` (ascending probe) and each state ``[ i<probe>
s<channel> <value> <validity> ]`` (ascending probe, channel): a value is ``f``
or ``N``, a validity code ``i`` or ``N``.

A chain entry names the encoding it was made with, so batches written under
either version keep verifying.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .canonical import EncodingError, Kind, text_token, value_token

__all__ = [
    "ENCODERS",
    "POLL_COLUMNS_V2",
    "SAMPLES_V1",
    "SAMPLES_V2",
    "SAMPLE_COLUMNS_V1",
    "encode_sample_batch",
    "encode_sample_batch_v1",
    "encode_sample_batch_v2",
]

SAMPLES_V1 = "cryod.samples/1"
SAMPLES_V2 = "cryod.samples/2"

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


#: a poll's columns in ``cryod.samples/2``: the poll, then its probes and states
POLL_COLUMNS_V2: tuple[str, ...] = (
    "id",
    "procedure_id",
    "console",
    "t_utc",
    "t_mono",
    "full_state",
    "supply_kpa",
    "supply_v",
    "cylinder_kpa",
    "cylinder_v",
    "skin_c",
    "skin_v",
    "console_time_s",
    "console_time_v",
    "probes",
    "states",
)
_HEADER_V2 = (
    "["
    + text_token(SAMPLES_V2)
    + text_token("sample_polls")
    + "["
    + "".join(text_token(name) for name in POLL_COLUMNS_V2)
    + "]"
)


def _real_or_null(value: Any, column: str) -> str:
    """SQLite may hand back a whole REAL as an integer: the token is the same."""
    try:
        return value_token(Kind.REAL, value)
    except EncodingError as exc:
        raise EncodingError(exc.reason, column) from None


def _int_or_null(value: Any, column: str) -> str:
    try:
        return value_token(Kind.INT, value)
    except EncodingError as exc:
        raise EncodingError(exc.reason, column) from None


def _text(value: Any, column: str) -> str:
    try:
        return value_token(Kind.TEXT, value)
    except EncodingError as exc:
        raise EncodingError(exc.reason, column) from None


def _poll_v2(poll: Sequence[Any]) -> str:
    if len(poll) != len(POLL_COLUMNS_V2):
        raise EncodingError(f"a poll has {len(POLL_COLUMNS_V2)} values, not {len(poll)}")
    rid, pid, console, t_utc, t_mono, full = poll[:6]
    parts = [
        "[",
        _int_or_null(rid, "id"),
        _int_or_null(pid, "procedure_id"),
        _text(console, "console"),
        _real_or_null(t_utc, "t_utc"),
        _real_or_null(t_mono, "t_mono"),
        _int_or_null(full, "full_state"),
    ]
    for i in range(6, 14, 2):
        parts.append(_real_or_null(poll[i], POLL_COLUMNS_V2[i]))
        parts.append(_int_or_null(poll[i + 1], POLL_COLUMNS_V2[i + 1]))
    parts.append("[")
    for probe in poll[14]:
        n, tip, tip_v, ret, ret_v = probe
        parts += [
            "[",
            _int_or_null(n, "probes"),
            _real_or_null(tip, "probes"),
            _int_or_null(tip_v, "probes"),
            _real_or_null(ret, "probes"),
            _int_or_null(ret_v, "probes"),
            "]",
        ]
    parts.append("][")
    for state in poll[15]:
        n, channel, value, validity = state
        parts += [
            "[",
            _int_or_null(n, "states"),
            _text(channel, "states"),
            _real_or_null(value, "states"),
            _int_or_null(validity, "states"),
            "]",
        ]
    parts.append("]]")
    return "".join(parts)


def encode_sample_batch_v2(polls: Iterable[Sequence[Any]]) -> bytes:
    """Polls as ``POLL_COLUMNS_V2`` sequences, ascending id -> the batch's bytes.

    A null id, console, clock or full_state, a NaN or a wrong type raises
    ``EncodingError`` naming the column. At 20 Hz and a batch a second this runs
    for about 20 polls a second: clarity over speed."""
    out = [_HEADER_V2]
    for poll in polls:
        for i in (0, 2, 3, 4, 5):
            if poll[i] is None:
                raise EncodingError("null where the table has a value", POLL_COLUMNS_V2[i])
        out.append(_poll_v2(poll))
    out.append("]")
    return "".join(out).encode("utf-8")


#: encoding name -> encoder; a chain entry's ``encoding`` picks one
ENCODERS: dict[str, Callable[[Iterable[Sequence[Any]]], bytes]] = {
    SAMPLES_V1: encode_sample_batch_v1,
    SAMPLES_V2: encode_sample_batch_v2,
}


def encode_sample_batch(rows: Iterable[Sequence[Any]], encoding: str = SAMPLES_V1) -> bytes:
    try:
        encoder = ENCODERS[encoding]
    except KeyError:
        raise EncodingError(f"unknown sample encoding {encoding!r}") from None
    return encoder(rows)
