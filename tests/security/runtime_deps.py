"""The runtime dependency closure of the installed ``cryod``, pinned to what is installed.

``python -m tests.security.runtime_deps`` prints one ``name==version`` line per
package that ``cryod`` needs at run time (its ``[project].dependencies`` and
theirs, markers evaluated for this interpreter, no extras), so an SBOM made
from it lists what ships, not the developer tools in the same venv.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["requirements_text", "runtime_closure"]


def _runtime_requirements(dist: str, extras: frozenset[str]) -> list[Requirement]:
    out = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None:
            out.append(req)
            continue
        # a requirement applies if its marker holds with no extra, or with one we asked for
        if any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            out.append(req)
    return out


def runtime_closure(root: str = "cryod") -> dict[str, str]:
    """Canonical name -> installed version for every run-time dependency of ``root``."""
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [
        (r.name, frozenset(r.extras)) for r in _runtime_requirements(root, frozenset())
    ]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        version = metadata.version(name)  # PackageNotFoundError: a runtime dep is missing
        found[canonicalize_name(name)] = version
        for req in _runtime_requirements(name, extras):
            todo.append((req.name, frozenset(req.extras)))
    return dict(sorted(found.items()))


def requirements_text(root: str = "cryod") -> str:
    return "".join(f"{n}=={v}\n" for n, v in runtime_closure(root).items())


if __name__ == "__main__":
    sys.stdout.write(requirements_text())
