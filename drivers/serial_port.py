"""Serial ports for the event loop: the one module of cryod that imports pyserial.

Both serial drivers open their port here: Modbus RTU (``drivers/modbus``) and
the line protocol (``drivers/serial_line.py``). pyserial configures the line
(baud rate, parity, stop bits, raw mode, an exclusive lock); after that the
port is a non-blocking file descriptor that the driver watches with
``loop.add_reader`` and reads and writes directly, so nothing ever blocks the
event loop. Every failure is an ``OSError`` naming the port (pyserial's
``SerialException`` is one too).
"""

from __future__ import annotations

import contextlib
import os

import serial

__all__ = ["SerialPort"]

#: bytes asked of the kernel per read call
_CHUNK_BYTES = 4096


class SerialPort:
    """One open serial port: 8 data bits, no flow control, non-blocking."""

    def __init__(self, path: str, *, baudrate: int, parity: str = "N", stopbits: int = 1) -> None:
        """Open and configure ``path``; bytes queued before it was opened are
        discarded (they are old news). Raises OSError naming the port."""
        self.path = path
        try:
            self._serial = serial.Serial(
                path,
                baudrate=baudrate,
                parity=parity,
                stopbits=stopbits,
                bytesize=8,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot open {path}: {exc}") from exc
        try:
            self._serial.reset_input_buffer()
            self.fd: int = self._serial.fileno()
            os.set_blocking(self.fd, False)
        except OSError as exc:
            self._serial.close()
            raise OSError(f"cannot set up {path}: {exc}") from exc

    def read_ready(self, max_bytes: int) -> bytes:
        """What the port holds now, up to about ``max_bytes``; call it when the loop
        reports the port readable. b"" after a spurious wake-up. Raises OSError when
        the port is gone: a read error, or readable yet empty (hang-up; a tty read
        without VMIN returns b"" both when it is empty and when it is gone, so only
        the first read of a wake-up can tell)."""
        chunks: list[bytes] = []
        total = 0
        while total < max_bytes:
            try:
                data = os.read(self.fd, _CHUNK_BYTES)
            except BlockingIOError:
                break
            if not data:
                if chunks:
                    break
                raise OSError(f"{self.path}: end of file (hang-up)")
            chunks.append(data)
            total += len(data)
        return b"".join(chunks)

    def write(self, data: bytes) -> int:
        """Write without blocking; the number of bytes taken (0 when the output is
        full). Raises OSError when the port is gone."""
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._serial.close()
