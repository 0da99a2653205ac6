"""Regenerate integrity/vectors.json from the reference implementation.

    .venv/bin/python -m tests.integrity.make_vectors > integrity/vectors.json

The file is frozen: a change to it is a change of the encoding (a new version
name), never a fix. tests/integrity/test_vectors.py checks both implementations
against it.
"""

from __future__ import annotations

import json
import sys

from cryod import integrity as I
from cryod.integrity.canonical import value_token

SALT = "000102030405060708090a0b0c0d0e0f"
AT = "2026-03-01T09:15:02.123456Z"
VALUES = [
    ("int", 0),
    ("int", 12),
    ("int", -7),
    ("int", 9223372036854775807),
    ("real", 0.0),
    ("real", -0.0),
    ("real", 1.5),
    ("real", -41.25),
    ("real", 0.1),
    ("real", 25000.0),
    ("real", 1e300),
    ("real", 5e-324),
    ("real", 1700000000.05),
    ("text", ""),
    ("text", "tip_c"),
    ("text", "Morton's neuroma, 3rd space"),
    ("text", "caf\u00e9 \u2013 \u00b0C \U0001f9ca"),
    ("text", 'line\nbreak\ttab "quoted" \\'),
    ("time", "2026-03-01T09:15:02.123456Z"),
    ("bool", True),
    ("bool", False),
    ("bool", 1),
    ("json", None),
    ("json", []),
    ("json", [{"code": "pain", "text": None}, {"code": "other", "text": "chilblain"}]),
    ("json", {"seconds": 30, "probe": 2, "b": True, "a": [1.5, "x", None]}),
    ("json", {"\u00e9": 1, "z": 2, "A": 3}),
    ("int", None),
    ("real", None),
]
ROWS = [
    (
        "cycles",
        ["id"],
        {
            "id": ("int", 3),
            "procedure_id": ("int", 1),
            "probe": ("int", 2),
            "phase": ("text", "freeze"),
            "started_at": ("time", "2026-03-01T09:15:02.123456Z"),
            "ended_at": ("time", None),
            "min_tip_c": ("real", -78.5),
            "duration_s": ("real", 90.125),
            "outcome": ("text", None),
            "host_only_limits": ("bool", False),
        },
    ),
    (
        "procedures",
        ["id"],
        {
            "id": ("int", 1),
            "patient_ref": ("text", "MN-0042"),
            "side": ("text", "left"),
            "opened_at": ("time", "2026-03-01T09:00:00.000000Z"),
            "adverse_events": ("json", [{"code": "pain", "text": None}]),
            "notes": ("text", "said \u201cfine\u201d"),
            "host_only_limits": ("bool", 0),
        },
    ),
    (
        "operator_actions",
        ["id"],
        {
            "id": ("int", 9),
            "args": ("json", {"seconds": 30.0, "probe": 1}),
            "accepted": ("bool", 1),
            "reason": ("text", None),
        },
    ),
]
BATCH = [
    [1, None, "c1", 1700000000.05, 1000.0, 0, "supply_kpa", 25000.0, "valid"],
    [2, 4, "c1", 1700000000.05, 1000.0, 1, "tip_c", -41.25, "valid"],
    [3, 4, "c1", 1700000000.05, 1000.0, 1, "return_kpa", None, "stale"],
    [4, 4, "c1", 1700000000.1, 1000.05, 1, "freeze_open", 1.0, "valid"],
]
#: cryod.samples/2: a full poll (every state listed) and the next one (changes only;
#: skin_c not polled, a state that stopped being polled)
BATCH_V2 = [
    [
        7, 4, "c1", 1700000000.05, 1000.0, 1,
        25000.0, 0, 38000.5, 0, None, None, 812.25, 0,
        [[1, -41.25, 0, None, 3], [2, -0.0, 1, 180.0, 0]],
        [[0, "master_open", 1.0, 0], [1, "freeze_open", 1.0, 0], [1, "trip", 0.0, 0]],
    ],
    [
        8, 4, "c1", 1700000000.1, 1000.05, 0,
        24990.0, 0, None, 2, None, None, 812.3, 0,
        [[1, -42.5, 0, 181.5, 0]],
        [[1, "freeze_open", 0.0, 0], [1, "trip", None, None]],
    ],
]  # fmt: skip
ENTRIES = [
    (1, AT, "ws-theatre-1", "baseline", {"revision": "0004", "samples": 0, "tables": {}}, "0" * 64),
    (
        2,
        AT,
        "ws-theatre-1",
        "samples",
        {
            "table": "samples",
            "op": "insert",
            "first": 1,
            "last": 4,
            "rows": 4,
            "digest": "ab" * 32,
            "encoding": "cryod.samples/1",
        },
        "cd" * 32,
    ),
]


def main() -> None:
    out: dict[str, object] = {
        "encoding": I.CANON,
        "note": "frozen: see docs/integrity.md; bytes are UTF-8 text",
        "values": [{"kind": k, "value": v, "token": value_token(k, v)} for k, v in VALUES],
        "rows": [],
        "sample_batches": [],
        "entries": [],
        "legacy_entries": [],
        "rows_digests": [],
    }
    for table, key, cols in ROWS:
        data = I.encode_row(table, key, cols)
        out["rows"].append(  # type: ignore[attr-defined]
            {
                "encoding": I.ROW_ENCODING,
                "table": table,
                "key": key,
                "columns": {c: [k, v] for c, (k, v) in cols.items()},
                "salt": SALT,
                "bytes": data.decode("utf-8"),
                "digest": I.row_digest(bytes.fromhex(SALT), data),
            }
        )
    data = I.encode_sample_batch_v1(BATCH)
    out["sample_batches"].append(  # type: ignore[attr-defined]
        {
            "encoding": I.SAMPLES_V1,
            "columns": [c for c, _ in I.SAMPLE_COLUMNS_V1],
            "rows": BATCH,
            "bytes": data.decode("utf-8"),
            "digest": I.batch_digest(data),
        }
    )
    data = I.encode_sample_batch_v2(BATCH_V2)
    out["sample_batches"].append(  # type: ignore[attr-defined]
        {
            "encoding": I.SAMPLES_V2,
            "columns": list(I.POLL_COLUMNS_V2),
            "rows": BATCH_V2,
            "bytes": data.decode("utf-8"),
            "digest": I.batch_digest(data),
        }
    )
    for seq, at, node, kind, payload, prev in ENTRIES:
        out["entries"].append(  # type: ignore[attr-defined]
            {
                "encoding": I.ENTRY_ENCODING,
                "seq": seq,
                "at": at,
                "node": node,
                "kind": kind,
                "payload": payload,
                "prev_hash": prev,
                "bytes": I.entry_bytes(seq, at, node, kind, payload, prev).decode("utf-8"),
                "hash": I.entry_hash(seq, at, node, kind, payload, prev),
            }
        )
    out["legacy_entries"].append(  # type: ignore[attr-defined]
        {
            "seq": 1,
            "at": AT,
            "kind": "database_created",
            "payload": {"revision": "0003"},
            "prev_hash": "0" * 64,
            "hash": I.legacy_entry_hash(1, AT, "database_created", {"revision": "0003"}, "0" * 64),
        }
    )
    refs = [("cycles", {"id": 3}, "11" * 32), ("procedures", {"id": 1}, "22" * 32)]
    out["rows_digests"].append(  # type: ignore[attr-defined]
        {"rows": [[t, k, d] for t, k, d in refs], "digest": I.rows_digest(refs)}
    )
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
