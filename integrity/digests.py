"""Digests: salted row digests, sample-batch digests, and an export's row list.

- A **row digest** is ``HMAC-SHA256(key = the row's salt, message = the row's
  canonical bytes)`` in lowercase hex. The salt (16 random bytes, kept beside
  the row, never in the chain) means a guessable value (a pseudonym, a date)
  cannot be confirmed from a digest alone; erasing the salt (redaction)
  leaves a digest nobody can test a guess against.
- **Column hints** are the first 8 hex digits of the same HMAC over one
  column (``s<name>`` followed by its value token): they let ``verify`` name
  the column that changed. They are not part of the specification another
  implementation must follow.
- A **batch digest** is ``SHA-256`` of a sample batch's canonical bytes (no
  salt: samples carry no guessable personal data).
- A **rows digest** is ``SHA-256`` of the list of ``(table, key, digest)`` an
  export carries, sorted, so one chain entry can seal an export.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from .canonical import EncodingError, Kind, json_value_token, text_token, value_token

__all__ = [
    "EXPORT_ROWS_ENCODING",
    "SALT_BYTES",
    "batch_digest",
    "column_hints",
    "new_salt",
    "row_digest",
    "rows_digest",
    "salt_from_hex",
]

SALT_BYTES = 16
HINT_HEX = 8
EXPORT_ROWS_ENCODING = "cryod.export-rows/1"


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def salt_from_hex(text: str) -> bytes:
    try:
        salt = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise EncodingError("a salt is 32 hex digits") from None
    if len(salt) != SALT_BYTES:
        raise EncodingError("a salt is 32 hex digits")
    return salt


def row_digest(salt: bytes, canonical: bytes) -> str:
    if len(salt) != SALT_BYTES:
        raise EncodingError(f"a salt is {SALT_BYTES} bytes")
    return hmac.new(salt, canonical, hashlib.sha256).hexdigest()


def column_hints(salt: bytes, columns: Mapping[str, tuple[Kind | str, Any]]) -> dict[str, str]:
    """A short salted digest per column, so a mismatch can name its column."""
    out: dict[str, str] = {}
    for name, (kind, value) in columns.items():
        try:
            token = value_token(kind, value)
        except EncodingError:
            token = "?"  # noqa: S105 - unencodable now: never equal to an encodable hint
        msg = (text_token(name) + token).encode("utf-8")
        out[name] = hmac.new(salt, msg, hashlib.sha256).hexdigest()[:HINT_HEX]
    return out


def batch_digest(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def rows_digest(rows: Iterable[tuple[str, Mapping[str, Any], str]]) -> str:
    """SHA-256 of ``[ s"cryod.export-rows/1" [ s<table> {key} s<digest> ]... ]``, the
    rows sorted by the bytes of their ``[table key]`` tokens."""
    items = []
    for table, key, digest in rows:
        ident = text_token(table) + json_value_token(dict(key))
        items.append((ident.encode("utf-8"), "[" + ident + text_token(digest) + "]"))
    items.sort(key=lambda item: item[0])
    body = "[" + text_token(EXPORT_ROWS_ENCODING) + "".join(t for _, t in items) + "]"
    return hashlib.sha256(body.encode("utf-8")).hexdigest()
