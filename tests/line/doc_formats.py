"""The number formats docs/line-protocol.md states for telemetry, read from the document.

Section 7's field table ("s, 3 decimals", "kPa, integer") and its probe-field
list, and section 6's FAULTS? trip time; tests check what cryosim writes
against them, so the document and the encoder cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "line-protocol.md"
#: every number field the document must give a format for
NUMBER_FIELDS = frozenset({"t", "sup", "cyl", "skin", "tip", "return", "trip_t", "faults_t_s"})


def _section(text: str, number: int) -> str:
    start = text.index(f"\n## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _decimals(text: str) -> int | None:
    """The decimals a format states: "N decimal(s)" or "integer" (0)."""
    m = re.search(r"(\d+) decimals?\b", text)
    if m:
        return int(m.group(1))
    return 0 if "integer" in text else None


def doc_decimals() -> dict[str, int]:
    """Field name -> the exact number of decimals the document states for it."""
    text = DOC.read_text()
    tel, commands = _section(text, 7), _section(text, 6)
    out: dict[str, int] = {}
    for row in re.finditer(r"^\| `(\w+)` \|[^|\n]*\|([^|\n]*)\|$", tel, re.M):
        decimals = _decimals(row.group(2))
        if decimals is not None:
            out[row.group(1)] = decimals
    for name in ("tip", "return", "trip_t"):
        found = re.search(rf"`{name}`[^\n]*?(\d+ decimals?)", tel)
        assert found, f"section 7 states no decimals for {name}"
        out[name] = int(found.group(1).split()[0])
    found = re.search(r"`t_s`[^|\n]*?(\d+ decimals?)", commands)
    assert found, "section 6 states no decimals for the FAULTS? trip time"
    out["faults_t_s"] = int(found.group(1).split()[0])
    missing = NUMBER_FIELDS - out.keys()
    assert not missing, f"the document gives no format for {sorted(missing)}"
    return out


def number_pattern(decimals: int) -> str:
    """A decimal written with exactly ``decimals`` places (an integer for 0)."""
    return r"-?[0-9]+" if decimals == 0 else rf"-?[0-9]+\.[0-9]{{{decimals}}}"


def format_errors(fields: Mapping[str, str], decimals: Mapping[str, int]) -> list[str]:
    """TEL (or SNAP?) fields whose numbers are not written as the document says."""
    errors = []

    def check(name: str, key: str, text: str) -> None:
        if not re.fullmatch(number_pattern(decimals[name]), text):
            errors.append(f"{key}={text!r}: {name} needs {decimals[name]} decimals")
        elif text.startswith("-") and not text.strip("-0."):
            errors.append(f"{key}={text!r}: a zero is written without a sign")

    for key in ("t", "sup", "cyl", "skin"):
        if key in fields and fields[key] != "open":
            check(key, key, fields[key])
    for key, value in fields.items():
        if re.fullmatch(r"p[0-9]+", key):
            parts = value.split(",")
            if parts[0] not in ("open", "short"):
                check("tip", key, parts[0])
            check("return", key, parts[1])
            if len(parts) == 5:
                check("trip_t", key, parts[4])
    return errors
