"""docs/modbus.md describes the profile: every register at its documented address."""

from __future__ import annotations

import re
from pathlib import Path

from cryod.drivers.profile import load_profile

DOC = Path(__file__).resolve().parents[2] / "docs" / "modbus.md"


def test_register_table_matches_the_profile() -> None:
    text = DOC.read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", text, re.M)}
    p = load_profile()
    for name, spec in p.registers.items():
        assert rows.get(name, "").strip() == str(spec.address), name
    pb = p.probe_block
    for name, spec in p.probe_registers.items():
        assert spec.offset is not None
        base = pb.input_base if spec.table == "input" else pb.holding_base
        stride = pb.input_stride if spec.table == "input" else pb.holding_stride
        first, last = base + spec.offset, base + 7 * stride + spec.offset
        assert rows.get(name, "").strip() == f"+{spec.offset} ({first}, {last})", name
    assert len(rows) == len(p.registers) + len(p.probe_registers)
