"""Supply chain: an SBOM of what ships, and runtime dependencies pinned to the tested minor.

The SBOM (CycloneDX JSON) lists the run-time closure of ``cryod`` with exact
versions, computed by tests/security/runtime_deps.py and handed to
``cyclonedx-py requirements``; the developer tools in the same venv are not
in it. The pin check parses ``[project].dependencies``: each needs an upper
bound no higher than the next minor of the installed (tested) version, and
the installed version must satisfy the spec.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .rig import REPO
from .runtime_deps import requirements_text, runtime_closure

pytestmark = pytest.mark.timeout(120)

BIN = Path(sys.executable).parent
RUNTIME = ["pymodbus", "pyserial", "aiomqtt", "paho-mqtt", "sqlalchemy", "alembic",
           "structlog", "pydantic", "rich"]  # fmt: skip
DEV = ["pytest", "pytest-asyncio", "hypothesis", "mypy", "ruff", "cyclonedx-bom", "atheris",
       "matplotlib", "build", "jsonschema"]  # fmt: skip


def _components(sbom: dict) -> dict[str, str]:
    return {canonicalize_name(c["name"]): c.get("version", "") for c in sbom["components"]}


def make_sbom(out: Path) -> dict:
    """What ``make sbom`` should run (see docs/reliability.md for the recipe)."""
    r = subprocess.run(
        [str(BIN / "cyclonedx-py"), "requirements", "--pyproject", str(REPO / "pyproject.toml"),
         "--output-format", "JSON", "--output-file", str(out), "-"],
        input=requirements_text(), capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_sbom_lists_the_runtime_dependencies_with_versions(tmp_path: Path) -> None:
    sbom = make_sbom(tmp_path / "sbom.json")
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "cryod"
    comps = _components(sbom)
    for name in RUNTIME:
        assert name in comps, f"{name} missing from the SBOM"
        assert comps[name] == metadata.version(name), (name, comps[name])
    # transitive run-time dependencies too (pydantic needs pydantic-core, alembic mako)
    assert {"pydantic-core", "mako"} <= set(comps)
    assert all(v for v in comps.values()), "a component without a version"
    leaked = sorted(set(comps) & {canonicalize_name(d) for d in DEV})
    assert leaked == [], f"developer tools in the runtime SBOM: {leaked}"
    assert set(comps) == set(runtime_closure())


def test_the_makefile_sbom_recipe_lists_runtime_dependencies_only(tmp_path: Path) -> None:
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^sbom:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe is not None
    out = tmp_path / "sbom.json"
    for line in recipe.group(1).splitlines():
        cmd = line.strip().lstrip("@")
        if cmd.startswith("echo"):
            continue
        cmd = cmd.replace("$(BIN)", str(BIN)).replace("sbom.json", str(out))
        r = subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, text=True, timeout=100)
        assert r.returncode == 0, (cmd, r.stderr)
    comps = _components(json.loads(out.read_text()))
    assert set(RUNTIME) <= set(comps)
    leaked = sorted(set(comps) & {canonicalize_name(d) for d in DEV})
    assert leaked == [], f"developer tools in the SBOM: {leaked}"


def pin_problems(deps: list[str], installed: Callable[[str], str]) -> list[str]:
    """Every runtime dependency needs ``<X.Y`` at most the next minor of the tested version."""
    problems = []
    for text in deps:
        req = Requirement(text)
        try:
            have = Version(installed(req.name))
        except metadata.PackageNotFoundError:
            problems.append(f"{req.name}: not installed, so never tested")
            continue
        nxt = Version(f"{have.major}.{have.minor + 1}")
        uppers = [Version(s.version) for s in req.specifier if s.operator == "<"]
        pinned = [s for s in req.specifier if s.operator in ("==", "~=")]
        if not uppers and not pinned:
            problems.append(f"{req.name}: no upper bound (tested {have})")
        elif uppers and min(uppers) > nxt:
            problems.append(f"{req.name}: allows <{min(uppers)}, above {nxt} (tested {have})")
        if not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name}: installed {have} does not satisfy '{req.specifier}'")
    return problems


def test_runtime_dependencies_pinned_to_the_tested_minor() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {canonicalize_name(Requirement(d).name) for d in deps} >= set(RUNTIME)
    assert pin_problems(deps, metadata.version) == []


def test_the_pin_check_catches_loose_pins() -> None:
    """Negative control: the check above can fail."""
    fake = {"pymodbus": "3.16.1", "aiomqtt": "2.5.1", "rich": "15.0.0", "x": "1.0"}.__getitem__
    assert pin_problems(["pymodbus>=3.16.1,<3.17", "aiomqtt>=2.5,<2.6"], fake) == []
    assert pin_problems(["pymodbus>=3.16.1,<3.18"], fake)  # one minor too far
    assert pin_problems(["pymodbus>=3.16.1,<4"], fake)  # major bound only
    assert pin_problems(["pymodbus>=3.16.1"], fake)  # unpinned
    assert pin_problems(["aiomqtt>=2.6,<2.7"], fake)  # tested version outside the spec
    assert pin_problems(["rich~=15.0.0", "x==1.0"], fake) == []
