"""cryod.research stays pure and reusable: no daemon, drivers or simulators; one FHIR door."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

from tests.security.test_sbom_and_pins import pin_problems

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "research"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.add(base)
    return found


def test_research_imports_nothing_of_the_daemon_drivers_or_simulators() -> None:
    for path in PACKAGE.glob("*.py"):
        for name in _imports(path):
            assert not name.startswith(("cryod.daemon", "cryod.drivers", "cryod.simulators")), (
                path.name,
                name,
            )
            assert not name.startswith(("daemon", "drivers", "simulators")), (path.name, name)
            assert not name.startswith(".."), (path.name, name)


def test_fhir_resources_is_behind_one_module() -> None:
    users = sorted(
        p.name for p in PACKAGE.glob("*.py") if any(n.startswith("fhir") for n in _imports(p))
    )
    assert users == ["fhir_library.py"]


def test_the_research_extra_is_pinned_to_the_tested_minor() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["research"] == ["fhir.resources>=8.3.0,<8.4"]
    assert pin_problems(extras["research"], metadata.version) == []


def test_the_makefile_installs_the_research_extra() -> None:
    extras = re.search(r"install --quiet -e '\.\[([a-z,]+)\]'", (ROOT / "Makefile").read_text())
    assert extras is not None
    assert "research" in extras.group(1).split(",")
