"""Protocol files: read a protocol TOML file (a path, or the name of a shipped
protocol) and hand its data to the pure core in ``protocols`` to validate.

This is the I/O shell around ``protocols``: the size cap, the file read, the
TOML decode and the lookup of the shipped protocols (``cryod.defaults/protocols``,
through ``importlib.resources``). Every failure is a ``ProtocolError`` naming
the file (format and limits: docs/protocol-format.md)::

    proto = load_protocol("classic-double-90", limits, console_min_tip_c, capabilities)
    proto = load_protocol(Path("site/my.toml"), limits, -150.0, frozenset({...}))

It reads a file from disk: the daemon calls it off the event loop
(``asyncio.to_thread``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from .limits import SafetyLimits
from .protocols import Problem, Protocol, ProtocolError, parse_protocol

__all__ = [
    "MAX_PROTOCOL_BYTES",
    "builtin_protocol_names",
    "builtin_protocol_path",
    "load_protocol",
]

#: a protocol is a few hundred bytes; anything this large is a mistake or an attack
MAX_PROTOCOL_BYTES = 256 * 1024


def builtin_protocol_path(name: str) -> Path:
    """The file of the shipped protocol ``name`` (it may not exist)."""
    ref = resources.files("cryod").joinpath("defaults", "protocols", f"{name}.toml")
    return Path(str(ref))


def builtin_protocol_names() -> list[str]:
    """The names of the shipped protocols, sorted."""
    folder = resources.files("cryod").joinpath("defaults", "protocols")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_protocol(
    path_or_builtin_name: str | Path,
    limits: SafetyLimits,
    console_min_tip_c: float,
    capabilities: Iterable[str],
) -> Protocol:
    """Load and validate a protocol file. A bare name (no slash, no ``.toml``)
    loads a built-in protocol shipped in ``cryod.defaults/protocols``. A file
    larger than ``MAX_PROTOCOL_BYTES`` is refused before it is read."""
    p = path_or_builtin_name
    if isinstance(p, str) and "/" not in p and not p.endswith(".toml"):
        path = builtin_protocol_path(p)
    else:
        path = Path(p)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_PROTOCOL_BYTES:
            raise ProtocolError(
                [Problem(source, "<file>", f"{size} bytes is larger than {MAX_PROTOCOL_BYTES}")]
            )
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ProtocolError([Problem(source, "<file>", "file not found")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError([Problem(source, "<file>", f"cannot read: {exc}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError([Problem(source, "<toml>", f"not valid TOML: {exc}")]) from exc
    return parse_protocol(data, limits, console_min_tip_c, capabilities, source=source)
