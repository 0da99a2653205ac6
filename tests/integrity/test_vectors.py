"""The canonical encoding's test vectors (integrity/vectors.json, docs/integrity.md),
checked against two implementations: the reference (cryod.integrity) and a second
one written here from the specification alone, sharing no code with it. A
collector on another database re-hashes the same bytes the same way."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from cryod import integrity as ref
from cryod.integrity.canonical import value_token

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "integrity" / "vectors.json").read_text("utf-8"))


# ---- the second implementation: bytes, from docs/integrity.md ---------------------------
def _text(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"s" + str(len(raw)).encode() + b":" + raw


def _real(x: float) -> bytes:
    assert not math.isnan(x)
    bits = struct.unpack(">Q", struct.pack(">d", x))[0]
    if bits == 1 << 63:  # -0 is written as +0
        bits = 0
    return b"f" + format(bits, "016x").encode()


def _json(v: Any) -> bytes:
    if v is None:
        return b"N"
    if v is True or v is False:
        return b"T" if v else b"F"
    if isinstance(v, str):
        return _text(v)
    if isinstance(v, (int, float)):
        return _real(float(v))
    if isinstance(v, list):
        return b"[" + b"".join(_json(x) for x in v) + b"]"
    pairs = sorted((k.encode("utf-8"), k) for k in v)
    return b"{" + b"".join(_text(k) + _json(v[k]) for _, k in pairs) + b"}"


def _value(kind: str, v: Any) -> bytes:
    if v is None:
        return b"N"
    if kind == "int":
        return b"i" + str(int(v)).encode() + b";"
    if kind == "real":
        return _real(float(v))
    if kind == "text":
        return _text(v)
    if kind == "time":
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", v)
        return b"t" + v.encode()
    if kind == "bool":
        return b"T" if v in (True, 1) else b"F"
    return _json(v)


def _row(table: str, key: list[str], columns: dict[str, list[Any]]) -> bytes:
    names = sorted(columns, key=lambda c: c.encode("utf-8"))
    body = b"".join(_text(c) + _value(*columns[c]) for c in names)
    keys = b"".join(_text(k) for k in key)
    return b"[" + _text("cryod.row/1") + _text(table) + b"[" + keys + b"]{" + body + b"}]"


def _batch(columns: list[str], rows: list[list[Any]]) -> bytes:
    kinds = ["int", "int", "text", "real", "real", "int", "text", "real", "text"]
    head = b"[" + _text("cryod.samples/1") + _text("samples")
    cols = b"[" + b"".join(_text(c) for c in columns) + b"]"
    body = b"".join(
        b"[" + b"".join(_value(k, v) for k, v in zip(kinds, r, strict=True)) + b"]" for r in rows
    )
    return head + cols + body + b"]"


def _maybe(kind: str, v: Any) -> bytes:
    return b"N" if v is None else _value(kind, v)


def _batch_v2(columns: list[str], polls: list[list[Any]]) -> bytes:
    """``cryod.samples/2``: each poll's scalars, then its probes and its states as lists."""
    head = b"[" + _text("cryod.samples/2") + _text("sample_polls")
    cols = b"[" + b"".join(_text(c) for c in columns) + b"]"
    scalar_kinds = ["int", "int", "text", "real", "real", "int"] + ["real", "int"] * 4
    body = b""
    for p in polls:
        out = b"[" + b"".join(_maybe(k, v) for k, v in zip(scalar_kinds, p[:14], strict=True))
        out += (
            b"["
            + b"".join(
                b"["
                + b"".join(
                    _maybe(k, v)
                    for k, v in zip(["int", "real", "int", "real", "int"], r, strict=True)
                )
                + b"]"
                for r in p[14]
            )
            + b"]"
        )
        out += (
            b"["
            + b"".join(
                b"["
                + b"".join(
                    _maybe(k, v) for k, v in zip(["int", "text", "real", "int"], r, strict=True)
                )
                + b"]"
                for r in p[15]
            )
            + b"]"
        )
        body += out + b"]"
    return head + cols + body + b"]"


def _entry(e: dict[str, Any]) -> bytes:
    return (
        b"["
        + _text("cryod.entry/1")
        + b"i%d;" % e["seq"]
        + b"t"
        + e["at"].encode()
        + _text(e["node"])
        + _text(e["kind"])
        + _json(e["payload"])
        + _text(e["prev_hash"])
        + b"]"
    )


def _rows_digest(rows: list[list[Any]]) -> str:
    items = sorted((_text(t) + _json(k), _text(d)) for t, k, d in rows)
    body = b"".join(b"[" + ident + d + b"]" for ident, d in items)
    return hashlib.sha256(b"[" + _text("cryod.export-rows/1") + body + b"]").hexdigest()


# ---- the vectors against both ----------------------------------------------------------------
def test_the_vectors_are_version_1() -> None:
    assert VECTORS["encoding"] == ref.CANON == "cryod.canon/1"
    assert len(VECTORS["values"]) >= 25
    assert VECTORS["rows"]
    assert VECTORS["entries"]


@pytest.mark.parametrize("case", VECTORS["values"], ids=lambda c: f"{c['kind']}:{c['value']!r}")
def test_value_tokens(case: dict[str, Any]) -> None:
    assert _value(case["kind"], case["value"]) == case["token"].encode("utf-8")
    assert value_token(case["kind"], case["value"]) == case["token"]


@pytest.mark.parametrize("case", VECTORS["rows"], ids=lambda c: c["table"])
def test_rows_and_salted_digests(case: dict[str, Any]) -> None:
    mine = _row(case["table"], case["key"], case["columns"])
    assert mine == case["bytes"].encode("utf-8")
    salt = bytes.fromhex(case["salt"])
    assert hmac.new(salt, mine, hashlib.sha256).hexdigest() == case["digest"]
    cols = {c: (k, v) for c, (k, v) in case["columns"].items()}
    theirs = ref.encode_row(case["table"], case["key"], cols)
    assert theirs == mine
    assert ref.row_digest(salt, theirs) == case["digest"]
    # self-describing: the bytes alone give the row back, and it re-encodes the same
    decoded = ref.decode_row(theirs)
    assert decoded.table == case["table"]
    assert ref.encode_row(decoded.table, decoded.key, decoded.columns) == theirs


@pytest.mark.parametrize("case", VECTORS["sample_batches"], ids=lambda c: c["encoding"])
def test_sample_batch(case: dict[str, Any]) -> None:
    if case["encoding"] == ref.SAMPLES_V1:
        mine = _batch(case["columns"], case["rows"])
    else:
        assert case["encoding"] == ref.SAMPLES_V2
        assert case["columns"] == list(ref.POLL_COLUMNS_V2)
        mine = _batch_v2(case["columns"], case["rows"])
    assert mine == case["bytes"].encode("utf-8")
    assert hashlib.sha256(mine).hexdigest() == case["digest"]
    theirs = ref.encode_sample_batch([tuple(r) for r in case["rows"]], case["encoding"])
    assert theirs == mine
    assert ref.batch_digest(theirs) == case["digest"]


def test_both_sample_encodings_have_a_vector() -> None:
    from cryod.integrity.samples import ENCODERS

    assert {c["encoding"] for c in VECTORS["sample_batches"]} == set(ENCODERS)


@pytest.mark.parametrize("case", VECTORS["entries"], ids=lambda c: c["kind"])
def test_chain_entries(case: dict[str, Any]) -> None:
    mine = _entry(case)
    assert mine == case["bytes"].encode("utf-8")
    assert hashlib.sha256(mine).hexdigest() == case["hash"]
    args = (case["seq"], case["at"], case["node"], case["kind"], case["payload"])
    assert ref.entry_hash(*args, case["prev_hash"]) == case["hash"]


def test_legacy_entries() -> None:
    for case in VECTORS["legacy_entries"]:
        body = {k: case[k] for k in ("seq", "at", "kind", "payload", "prev_hash")}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == case["hash"]
        args = (case["seq"], case["at"], case["kind"], case["payload"], case["prev_hash"])
        assert ref.legacy_entry_hash(*args) == case["hash"]


def test_rows_digest_of_an_export() -> None:
    for case in VECTORS["rows_digests"]:
        assert _rows_digest(case["rows"]) == case["digest"]
        assert ref.rows_digest([tuple(r) for r in case["rows"]]) == case["digest"]


def test_the_specification_shows_the_vectors() -> None:
    """docs/integrity.md carries the row vector's bytes and digest verbatim."""
    doc = (ROOT / "docs" / "integrity.md").read_text("utf-8")
    case = VECTORS["rows"][0]
    assert case["bytes"] in doc
    assert case["digest"] in doc
    for batch in VECTORS["sample_batches"]:
        assert batch["digest"] in doc
    assert VECTORS["entries"][0]["hash"] in doc
