"""Build tests/bench/slowdisk.c: an LD_PRELOAD library that makes every fsync and
fdatasync of the process wait (a slow disk, for ``jitter_ms_p99_disk_slow``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("slowdisk.c")


def build(out_dir: Path) -> Path | None:
    """The shared library, or None when no C compiler is on this machine."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    lib = out_dir / "libslowdisk.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return lib


def env(lib: Path, fsync_ms: int) -> dict[str, str]:
    return {"LD_PRELOAD": str(lib), "SLOWDISK_FSYNC_MS": str(fsync_ms)}
