"""Pseudo-terminal links: the simulator's end of a serial line.

``open_link(path)`` creates a pty pair, puts the terminal end in raw mode and
makes ``path`` a symlink to it, so a client opens ``path`` exactly as it would
open ``/dev/ttyUSB0``. The simulator keeps the terminal end open itself, so a
client closing and reopening the port does not tear the link down (reads on
the controller end would otherwise fail with EIO).
"""

from __future__ import annotations

import contextlib
import os
import pty
import tty
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PtyLink", "open_link"]


@dataclass
class PtyLink:
    master_fd: int  # the simulator reads and writes here
    slave_fd: int  # held open by the simulator; clients open `path`
    slave_name: str
    path: Path

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_symlink():
                self.path.unlink()


def open_link(path: str | os.PathLike[str]) -> PtyLink:
    """Create a raw pty pair and point ``path`` at its terminal end."""
    master_fd, slave_fd = pty.openpty()
    tty.setraw(slave_fd)
    os.set_blocking(master_fd, False)
    slave_name = os.ttyname(slave_fd)
    link = Path(path)
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            os.close(master_fd)
            os.close(slave_fd)
            raise FileExistsError(f"{link} exists and is not a symlink")
        link.unlink()
    link.symlink_to(slave_name)
    return PtyLink(master_fd, slave_fd, slave_name, link)
