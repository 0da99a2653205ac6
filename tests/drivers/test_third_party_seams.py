"""Each wire library behind one module of ours (house rule 4), checked on the source.

pyserial is imported only by drivers/serial_port.py (both serial drivers open
their port there) and pymodbus only by drivers/modbus/codec.py (the driver and
the simulator's server frame with it, so there is one Modbus RTU CRC).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("daemon", "drivers", "simulators")


def _importers(top: str) -> set[str]:
    """Source files (relative to the repository) that import module ``top``."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                if any(n == top or n.startswith(top + ".") for n in names):
                    found.add(path.relative_to(ROOT).as_posix())
    return found


@pytest.mark.parametrize(
    ("library", "home"),
    [("serial", "drivers/serial_port.py"), ("pymodbus", "drivers/modbus/codec.py")],
)
def test_library_imported_in_one_module(library: str, home: str) -> None:
    assert _importers(library) == {home}


def test_the_check_sees_imports() -> None:
    """Negative control: the scan finds a library imported in several places."""
    assert len(_importers("asyncio")) > 3
