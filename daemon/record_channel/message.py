"""The record message: one chain entry with what it covers, and the guard that lets
exactly one personal field through. Pure: no I/O, no clock (times are passed in).

Topic ``cryod-record/v1/{site}/{node}/chain``; the body (``cryod.record/1``,
docs/record-channel.md, the collector's ``cryod.hub.messages`` reads it)::

    {"schema": "cryod.record/1", "site", "node",
     "entry": {"seq", "at", "node", "kind", "payload", "prev_hash", "hash", "v"},
     "rows": [{"table", "key", "canonical_b64", "salt_hex"}],
     "block": {"encoding", "data_b64"} | null,
     "profile": {"id", "version", "hash"} | null,
     "withheld": {"reason", "by_seq"} | null,
     "sent_at"}

**Privacy.** The record channel is the only MQTT output that may carry the
pseudonymous patient reference. ``RecordEncoder`` walks every key of the
message (the entry's payload at any depth) and every column of every row it
carries (decoded from the canonical bytes, JSON columns at any depth) with the
telemetry guard's word rule (``payloads.is_personal_key``). Exactly two places
may hold a key that rule flags:

- the ``patient_ref`` column of a ``procedures`` row, whose value must pass
  the pseudonym rule (``check_pseudonym``, injected: the store's
  ``records.check_patient_ref``), and
- ``entry.payload.columns.patient_ref`` of a ``procedures`` row entry: the
  column hint (8 hex digits of a salted HMAC, docs/integrity.md), which
  confirms nothing without the row's salt;

and a ``patient_ref`` key anywhere whose value is exactly the store's
placeholder (``records.REDACTED``: an operator action's arguments keep the
key, never the reference).

Anything else refuses the whole message (``RecordPrivacyError``, naming the
place but never the value). Telemetry's guard is unchanged.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryod.daemon.telemetry.payloads import is_personal_key
from cryod.integrity import EncodingError, Entry, decode_row

__all__ = [
    "SCHEMA",
    "TOPIC_PREFIX",
    "BlockOut",
    "RecordEncoder",
    "RecordPrivacyError",
    "RowOut",
    "Withheld",
    "record_document",
    "record_topic",
]

SCHEMA: Final = "cryod.record/1"
TOPIC_PREFIX: Final = "cryod-record/v1"
#: the one personal field the channel carries, and the table that holds it
PSEUDONYM_COLUMN: Final = ("procedures", "patient_ref")
_HINT = re.compile(r"^[0-9a-f]{8}$")


class RecordPrivacyError(ValueError):
    """A record message would carry personal data beyond the pseudonymous reference."""


@dataclass(frozen=True, slots=True)
class RowOut:
    """A research row as stored: its canonical ``cryod.row/1`` bytes and its salt."""

    table: str
    key: Mapping[str, int | str]
    canonical: bytes
    salt: bytes


@dataclass(frozen=True, slots=True)
class BlockOut:
    """A sample batch in its canonical form (the entry's encoding)."""

    encoding: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Withheld:
    """Why an entry travels without what it covers (``cryod.hub.messages.Withheld``)."""

    reason: str  # superseded | redacted | not_procedure
    by_seq: int | None = None


def record_topic(site: str, node: str) -> str:
    return f"{TOPIC_PREFIX}/{site}/{node}/chain"


def record_document(
    *,
    site: str,
    node: str,
    entry: Entry,
    rows: Sequence[RowOut] = (),
    block: BlockOut | None = None,
    profile: Mapping[str, str] | None = None,
    withheld: Withheld | None = None,
    sent_at: str,
) -> dict[str, Any]:
    """The message for one chain entry (``sent_at`` in the fixed UTC form)."""
    return {
        "schema": SCHEMA,
        "site": site,
        "node": node,
        "entry": {
            "seq": entry.seq,
            "at": entry.at,
            "node": entry.node or "",
            "kind": entry.kind,
            "payload": entry.payload,
            "prev_hash": entry.prev_hash,
            "hash": entry.hash,
            "v": entry.v,
        },
        "rows": [
            {
                "table": r.table,
                "key": dict(r.key),
                "canonical_b64": base64.b64encode(r.canonical).decode("ascii"),
                "salt_hex": r.salt.hex(),
            }
            for r in rows
        ],
        "block": None
        if block is None
        else {"encoding": block.encoding, "data_b64": base64.b64encode(block.data).decode()},
        "profile": None if profile is None else dict(profile),
        "withheld": None
        if withheld is None
        else {"reason": withheld.reason, "by_seq": withheld.by_seq},
        "sent_at": sent_at,
    }


class RecordEncoder:
    """Encodes record messages after the privacy check (see the module docstring)."""

    def __init__(self, check_pseudonym: Callable[[str], object], placeholder: str) -> None:
        self._check_pseudonym = check_pseudonym
        self._placeholder = placeholder

    def encode(self, doc: Mapping[str, Any]) -> bytes:
        """Compact JSON (UTF-8), or ``RecordPrivacyError``; NaN is refused (not JSON)."""
        self.check(doc)
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )

    def check(self, doc: Mapping[str, Any]) -> None:
        entry = doc.get("entry") or {}
        payload = entry.get("payload")
        hint_ok = (
            entry.get("kind") == "row"
            and isinstance(payload, Mapping)
            and payload.get("table") == PSEUDONYM_COLUMN[0]
        )
        for key in doc:
            if key != "entry" and key != "rows" and is_personal_key(str(key)):
                raise RecordPrivacyError(f"$.{key}: key may carry personal data")
        for key in entry:
            if is_personal_key(str(key)):
                raise RecordPrivacyError(f"$.entry.{key}: key may carry personal data")
        self._walk(payload, "$.entry.payload", allow_hint=hint_ok)
        for i, row in enumerate(doc.get("rows") or ()):
            self._row(row, f"$.rows[{i}]")

    def _row(self, row: Mapping[str, Any], where: str) -> None:
        for key in row:
            if is_personal_key(str(key)):
                raise RecordPrivacyError(f"{where}.{key}: key may carry personal data")
        try:
            decoded = decode_row(base64.b64decode(row["canonical_b64"], validate=True))
        except (EncodingError, ValueError, KeyError) as exc:
            raise RecordPrivacyError(f"{where}: row bytes cannot be checked: {exc}") from None
        for column, (_kind, value) in decoded.columns.items():
            at = f"{where} {decoded.table}.{column}"
            if (decoded.table, column) == PSEUDONYM_COLUMN:
                if value is None:
                    continue
                try:
                    if not isinstance(value, str):
                        raise ValueError("not text")
                    self._check_pseudonym(value)
                except ValueError as exc:
                    # the reason only: never the value
                    raise RecordPrivacyError(f"{at}: not a pseudonym ({exc})") from None
                continue
            if is_personal_key(column):
                raise RecordPrivacyError(f"{at}: column may carry personal data")
            self._walk(value, at, allow_hint=False)

    def _walk(self, value: Any, where: str, *, allow_hint: bool) -> None:
        """Every key at any depth; a personal key passes only as the column hint of a
        procedures row entry or as ``patient_ref`` holding the placeholder."""
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if not isinstance(key, str):
                    raise RecordPrivacyError(f"{where}: non-string key")
                if is_personal_key(key):
                    if not self._allowed(where, key, inner, allow_hint=allow_hint):
                        raise RecordPrivacyError(f"{where}.{key}: key may carry personal data")
                    continue
                self._walk(inner, f"{where}.{key}", allow_hint=allow_hint)
        elif isinstance(value, (list, tuple)):
            for i, inner in enumerate(value):
                self._walk(inner, f"{where}[{i}]", allow_hint=allow_hint)

    def _allowed(self, where: str, key: str, value: Any, *, allow_hint: bool) -> bool:
        if key != PSEUDONYM_COLUMN[1] or not isinstance(value, str):
            return False
        if value == self._placeholder:
            return True
        return allow_hint and where == "$.entry.payload.columns" and _HINT.match(value) is not None
