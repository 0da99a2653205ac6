"""The record channel's message, as the collector reads it.

Topic ``cryod-record/v1/{site}/{node}/chain``, QoS 1, never retained; one
message per chain entry, in chain order, JSON UTF-8::

    {"schema": "cryod.record/1", "site": S, "node": N,
     "entry": {"seq", "at", "node", "kind", "payload", "prev_hash", "hash", "v"},
     "rows": [{"table", "key", "canonical_b64", "salt_hex"}],   # row entries
     "block": {"encoding", "data_b64"} | null,                  # sample entries
     "profile": {"id", "version", "hash"} | null,
     "withheld": {"reason", "by_seq"} | null,                   # what is not carried, why
     "sent_at": "...Z"}

``withheld`` says why an entry that covers content travels without it: a row
entry whose row has changed since (``superseded``, ``by_seq`` the entry now
covering it) or was erased (``redacted``, ``by_seq`` the redaction), a sample
entry whose batch holds no procedure sample (``not_procedure``: samples
outside procedures stay in the room) or was erased (``redacted``). The entry
itself always travels, so the chain has no gap and its hash is checked.

The format is the room side's: ``cryod.daemon.record_channel.message`` writes
it, docs/record-channel.md and docs/asyncapi.yaml (``RecordEntry``) describe
it, and the room's tests run real messages through this parser and the ingest
core. A change of the format changes both sides and the AsyncAPI schema
together. ``parse_message`` is strict and pure:
it turns bytes into a ``RecordMessage`` or raises ``MessageError`` naming the
field and the reason, never anything else. Whether the message *extends* a
room's chain is ``ingest``'s question.

The collector accepts the current and the previous record schema
(``ACCEPTED_SCHEMAS``; there is only one so far).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from cryod.common.validation import TOP, field_problems
from cryod.integrity import SALT_BYTES, Entry

__all__ = [
    "ACCEPTED_SCHEMAS",
    "CURRENT_SCHEMA",
    "MAX_MESSAGE_BYTES",
    "Block",
    "MessageError",
    "ProfileRef",
    "RecordMessage",
    "RowCopy",
    "Topic",
    "Withheld",
    "parse_message",
    "parse_time",
    "parse_topic",
]

CURRENT_SCHEMA: Final = "cryod.record/1"
#: the current record schema and the previous one (none yet)
ACCEPTED_SCHEMAS: Final = (CURRENT_SCHEMA,)
#: a sample batch of 10,000 rows is well under this; anything larger is refused
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
TOPIC_PREFIX: Final = "cryod-record/v1"

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_HEX64 = r"^[0-9a-f]{64}$"
_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
_TIME_RE = re.compile(_TIME)

NodeId = Annotated[StrictStr, Field(pattern=_ID)]
Hex64 = Annotated[StrictStr, Field(pattern=_HEX64)]
UtcText = Annotated[StrictStr, Field(pattern=_TIME)]


class MessageError(ValueError):
    """A message that is not a record message; ``field`` names where (or ``-``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Entry(_Strict):
    seq: StrictInt = Field(ge=1)
    at: UtcText
    node: StrictStr = Field(max_length=64)  # "" in a legacy (v1) entry
    kind: StrictStr = Field(min_length=1, max_length=64)
    payload: Any
    prev_hash: Hex64
    hash: Hex64
    v: Literal[1, 2] = 2


class _Row(_Strict):
    table: StrictStr = Field(min_length=1, max_length=64)
    key: dict[str, StrictInt | StrictStr] = Field(min_length=1)
    canonical_b64: StrictStr
    salt_hex: StrictStr = Field(pattern=rf"^[0-9a-f]{{{2 * SALT_BYTES}}}$")


class _Block(_Strict):
    encoding: StrictStr = Field(min_length=1, max_length=64)
    data_b64: StrictStr


class _Profile(_Strict):
    id: StrictStr = Field(min_length=1, max_length=64)
    version: StrictStr = Field(min_length=1, max_length=32)
    hash: StrictStr = Field(pattern=r"^sha256:[0-9a-f]{64}$")


WITHHELD_REASONS: Final = ("superseded", "redacted", "not_procedure")


class _Withheld(_Strict):
    reason: Literal["superseded", "redacted", "not_procedure"]
    by_seq: StrictInt | None = Field(default=None, ge=1)


class _Message(_Strict):
    schema_: StrictStr = Field(alias="schema")
    site: NodeId
    node: NodeId
    entry: _Entry
    rows: list[_Row] = Field(default_factory=list, max_length=1000)
    block: _Block | None = None
    profile: _Profile | None = None
    withheld: _Withheld | None = None
    sent_at: UtcText


@dataclass(frozen=True, slots=True)
class RowCopy:
    """One research row as the room stored it: its canonical bytes and salt."""

    table: str
    key: dict[str, int | str]
    canonical: bytes
    salt: bytes


@dataclass(frozen=True, slots=True)
class Block:
    """One sample batch in its canonical (compact) form."""

    encoding: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ProfileRef:
    """The study profile a record was made under (``StudyProfile.stamp()``)."""

    id: str
    version: str
    hash: str


@dataclass(frozen=True, slots=True)
class Withheld:
    """Why an entry travels without the row or sample block it covers."""

    reason: str  # one of WITHHELD_REASONS
    by_seq: int | None = None


@dataclass(frozen=True, slots=True)
class RecordMessage:
    schema: str
    site: str
    node: str
    entry: Entry
    rows: tuple[RowCopy, ...]
    block: Block | None
    profile: ProfileRef | None
    sent_at: dt.datetime
    at: dt.datetime  # the entry's time, parsed
    raw: bytes  # what arrived, for quarantine and holding
    withheld: Withheld | None = None

    @property
    def seq(self) -> int:
        return self.entry.seq


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    node: str


def parse_topic(topic: str) -> Topic:
    """``cryod-record/v1/{site}/{node}/chain`` -> its site and node."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_PREFIX or parts[4] != "chain":
        raise MessageError("topic", f"not a record topic: {topic[:120]!r}")
    id_re = re.compile(_ID)
    if not (id_re.match(parts[2]) and id_re.match(parts[3])):
        raise MessageError("topic", "site and node: letters, digits, '_', '.', '-'")
    return Topic(site=parts[2], node=parts[3])


def parse_time(text: str) -> dt.datetime:
    """A ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` text as an aware UTC datetime."""
    if not _TIME_RE.match(text):
        raise ValueError(f"not a UTC time YYYY-MM-DDTHH:MM:SS.ffffffZ: {text[:40]!r}")
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def _b64(field: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError(field, "not valid base64") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _first_error(exc: ValidationError) -> MessageError:
    first = field_problems(exc)[0]
    return MessageError("-" if first.key == TOP else first.key, first.reason)


def parse_message(raw: bytes) -> RecordMessage:
    """Strictly parse one message; raise ``MessageError`` (field and reason)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError("-", f"{len(raw)} bytes is larger than {MAX_MESSAGE_BYTES}")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise MessageError("-", "not UTF-8") from None
    except ValueError as exc:
        raise MessageError("-", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MessageError("-", "not a JSON object")
    schema = doc.get("schema")
    if schema not in ACCEPTED_SCHEMAS:
        raise MessageError(
            "schema", f"{str(schema)[:64]!r} is not one of {', '.join(ACCEPTED_SCHEMAS)}"
        )
    try:
        m = _Message.model_validate(doc)
    except ValidationError as exc:
        raise _first_error(exc) from None
    e = m.entry
    if e.v == 2 and e.node != m.node:
        raise MessageError("entry.node", f"{e.node!r} is not the message's node {m.node!r}")
    rows = tuple(
        RowCopy(
            table=r.table,
            key=dict(r.key),
            canonical=_b64(f"rows.{i}.canonical_b64", r.canonical_b64),
            salt=bytes.fromhex(r.salt_hex),
        )
        for i, r in enumerate(m.rows)
    )
    block = (
        None
        if m.block is None
        else Block(m.block.encoding, _b64("block.data_b64", m.block.data_b64))
    )
    profile = (
        None
        if m.profile is None
        else ProfileRef(id=m.profile.id, version=m.profile.version, hash=m.profile.hash)
    )
    entry = Entry(
        seq=e.seq,
        at=e.at,
        kind=e.kind,
        payload=e.payload,
        prev_hash=e.prev_hash,
        hash=e.hash,
        node=e.node or None,
        v=e.v,
    )
    try:
        at = parse_time(e.at)
        sent_at = parse_time(m.sent_at)
    except ValueError as exc:  # a pattern-valid text that is no date (month 13)
        raise MessageError("entry.at/sent_at", str(exc)) from None
    return RecordMessage(
        schema=m.schema_,
        site=m.site,
        node=m.node,
        entry=entry,
        rows=rows,
        block=block,
        profile=profile,
        sent_at=sent_at,
        at=at,
        raw=raw,
        withheld=None if m.withheld is None else Withheld(m.withheld.reason, m.withheld.by_seq),
    )
