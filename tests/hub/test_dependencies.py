"""The collector's dependencies: the ``hub`` extra, pinned to the tested minor, and
never in the edge daemon's runtime closure (its SBOM does not change)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.security.rig import REPO
from tests.security.runtime_deps import runtime_closure
from tests.security.test_sbom_and_pins import pin_problems


def hub_extra() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["hub"])


def test_the_hub_extra_is_pinned_to_the_tested_minor() -> None:
    deps = hub_extra()
    assert {canonicalize_name(Requirement(d).name) for d in deps} == {
        "psycopg",
        "argon2-cffi",
        "starlette",
        "jinja2",
        "python-multipart",
        "uvicorn",
    }
    assert pin_problems(deps, metadata.version) == []


def test_the_daemons_runtime_closure_has_no_collector_dependency() -> None:
    closure = set(runtime_closure())
    assert not closure & {
        "psycopg",
        "psycopg-binary",
        "argon2-cffi",
        "argon2-cffi-bindings",
        "starlette",
        "jinja2",
        "python-multipart",
        "uvicorn",
    }


def test_the_daemon_never_loads_the_collector() -> None:
    code = (
        "import sys, cryod.daemon.cli, cryod.daemon.service, cryod.daemon.ctl\n"
        "hub = ('cryod.hub', 'psycopg', 'argon2', 'starlette', 'uvicorn', 'jinja2')\n"
        "print(sorted(m for m in sys.modules if m.startswith(hub)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_makefile_venv_installs_the_hub_extra() -> None:
    extras = re.search(r"install --quiet -e '\.\[([a-z,]+)\]'", (REPO / "Makefile").read_text())
    assert extras is not None
    assert set(extras.group(1).split(",")) >= {"dev", "report", "research", "hub"}
