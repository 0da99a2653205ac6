"""Find console drivers by name through Python entry points (group ``cryod.drivers``).

A third party adds a console by shipping a package that declares an entry
point in this group; nothing in cryod has to change (issue 3).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from .base import Driver

__all__ = ["ENTRY_POINT_GROUP", "DriverNotFound", "available_drivers", "load_driver"]

ENTRY_POINT_GROUP = "cryod.drivers"


class DriverNotFound(LookupError):
    """No driver of that name is installed (or it failed to load)."""


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # first on sys.path wins, as for imports
    return found


def available_drivers() -> list[str]:
    """Names of every installed driver, sorted."""
    return sorted(_entry_points())


def load_driver(name: str) -> type[Driver]:
    """The driver class registered as ``name``; DriverNotFound lists the known names."""
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        known = ", ".join(sorted(eps)) or "none"
        raise DriverNotFound(f"unknown driver {name!r} (installed drivers: {known})")
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plug-in must not take the daemon down
        raise DriverNotFound(f"driver {name!r} ({ep.value}) failed to load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DriverNotFound(f"driver {name!r} ({ep.value}) is not a cryod Driver subclass")
    return cls
