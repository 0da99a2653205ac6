"""Modbus TCP and RTU console drivers, in pymodbus's own layering.

- ``codec``: PDUs and frames (requests, answers, RTU CRC, MBAP), pure; the one
  module that imports pymodbus, used by the driver and by the simulator's
  server alike.
- ``transport``: the TCP and RTU links (RTU through ``drivers/serial_port.py``),
  deadlines, bounded retries, reconnection with the drivers' back-off rule.
- ``regmap``: a console profile resolved for the poll path, and the decode of a
  register image into a Snapshot, pure.
- ``driver``: ``ModbusTcpDriver`` and ``ModbusRtuDriver`` (entry points
  ``modbus-tcp`` and ``modbus-rtu``): the profile's reads and confirmed writes.

Wire format: docs/modbus.md.
"""

from __future__ import annotations

from .codec import (
    ModbusExceptionResponse,
    Request,
    crc16,
    decode_tcp_adu,
    find_rtu_frame,
    parse_response,
    rtu_frame,
    tcp_adu,
)
from .driver import ModbusRtuDriver, ModbusTcpDriver, RtuOptions, TcpOptions

__all__ = [
    "ModbusExceptionResponse",
    "ModbusRtuDriver",
    "ModbusTcpDriver",
    "Request",
    "RtuOptions",
    "TcpOptions",
    "crc16",
    "decode_tcp_adu",
    "find_rtu_frame",
    "parse_response",
    "rtu_frame",
    "tcp_adu",
]
