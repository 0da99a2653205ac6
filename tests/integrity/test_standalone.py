"""cryod.integrity stands alone: stdlib only, nothing from the daemon, drivers or
simulators, so a collector on another database (or a receiver of the record
channel) imports it to re-hash exactly the daemon's bytes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "integrity"


def test_integrity_imports_only_the_standard_library_and_itself() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # its own modules
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", (path.name, name)


def test_importing_it_loads_no_daemon_code() -> None:
    code = (
        "import sys, cryod.integrity\n"
        "bad = [m for m in sys.modules if m.startswith(('cryod.daemon', 'cryod.drivers',"
        " 'cryod.simulators', 'sqlalchemy'))]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
