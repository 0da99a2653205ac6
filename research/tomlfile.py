"""Reading a study profile's TOML: every failure names the file and says why.

This is the same rule as ``cryod.drivers.tomlfile`` (a 1 MiB cap checked
before parsing), repeated here because ``cryod.research`` imports nothing
from the daemon, the drivers or the simulators: a study collector uses it
without them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

__all__ = ["MAX_TOML_BYTES", "read_toml"]

MAX_TOML_BYTES = 1024 * 1024


def read_toml(path: Path, error: type[Exception]) -> dict[str, Any]:
    """Parse ``path``; raise ``error("<path>: <reason>")`` on any failure."""
    try:
        size = path.stat().st_size
        if size > MAX_TOML_BYTES:
            raise error(f"{path}: {size} bytes is larger than {MAX_TOML_BYTES}")
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc
