"""The ``[mqtt]`` config section, validated before anything connects.

Fails closed: unknown keys, out-of-range values, missing files and secret
files (client key, password file) that group or others can read are all
errors naming the file, the key and the reason. A secret readable by every
local user would let any of them publish as the daemon.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cryod.common.validation import problem_lines

__all__ = [
    "MqttConfig",
    "MqttConfigError",
    "QosConfig",
    "TlsConfig",
    "check_secret_file",
    "load_mqtt_config",
]

#: a topic level we generate: no wildcards, no separators, no surprises
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Qos = Literal[0, 1, 2]


class MqttConfigError(ValueError):
    """A bad ``[mqtt]`` section; the message names the file, key and reason."""


def check_secret_file(path: Path) -> Path:
    """Refuse a secret file that is missing, not a regular file, or readable by group/others."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ValueError(
            f"refusing secret file {path}: mode {mode:04o} lets group or others read or "
            f"write it (run: chmod 600 {path})"
        )
    return path


def _check_public_file(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"file {path} does not exist or is not readable")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TlsConfig(_Strict):
    """TLS to the broker: the CA that signs the broker's certificate, optionally a client cert."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    #: only for test rigs; a production config must verify the broker's name
    verify_hostname: bool = True

    @field_validator("ca_file", "cert_file")
    @classmethod
    def _public(cls, value: Path | None) -> Path | None:
        return None if value is None else _check_public_file(value)

    @field_validator("key_file")
    @classmethod
    def _secret(cls, value: Path | None) -> Path | None:
        return None if value is None else check_secret_file(value)

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be given together")
        return self


class QosConfig(_Strict):
    """QoS per topic. Alarms and cycles are at-least-once, so they cannot be 0."""

    status: Qos = 1
    telemetry: Qos = 0
    state: Qos = 1
    alarms: Literal[1, 2] = 1
    cycles: Literal[1, 2] = 1
    audit_head: Literal[1, 2] = 1  # an anchor of the record: at least once


class MqttConfig(_Strict):
    """Where and how the telemetry publisher connects. MQTT is telemetry out only."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    #: connect over a unix socket instead of TCP (``host``/``port`` are then ignored)
    unix_socket: Path | None = None
    site: str
    #: one console per publisher; a daemon with several consoles leaves this out and calls
    #: ``for_console(id)`` for each (and leaves ``client_id`` unset so each gets its own)
    console: str | None = None
    client_id: str | None = None
    keepalive_s: int = Field(default=10, ge=2, le=3600)
    telemetry_hz: float = Field(default=2.0, gt=0, le=50)
    #: bounded queue between the poll loop and the publisher; the oldest is dropped when full
    queue_size: int = Field(default=64, ge=1, le=100_000)
    #: how long to wait for the broker's CONNACK (a rejected TLS client cert shows up here)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)
    qos: QosConfig = QosConfig()
    tls: TlsConfig | None = None
    username: str | None = None
    password_file: Path | None = None

    @field_validator("site", "console")
    @classmethod
    def _topic_level(cls, value: str | None) -> str | None:
        if value is not None and not _TOPIC_LEVEL.match(value):
            raise ValueError(
                f"{value!r} is not a safe topic level (letters, digits, '_', '.', '-'; "
                "at most 64; no '/', '+' or '#')"
            )
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not _TOPIC_LEVEL.match(value):
            raise ValueError(f"client_id {value!r} must match {_TOPIC_LEVEL.pattern}")
        return value

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, value: Path | None) -> Path | None:
        return None if value is None else check_secret_file(value)

    @model_validator(mode="after")
    def _cross(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self

    def for_console(self, console: str) -> MqttConfig:
        """A validated copy for one console (``model_copy`` would skip the topic-level check)."""
        data = self.model_dump()
        data["console"] = console
        return MqttConfig.model_validate(data)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"cryod-{self.site}-{self.console}"

    @property
    def broker(self) -> str:
        """Where we connect, for status output (never includes credentials)."""
        if self.unix_socket is not None:
            return f"unix:{self.unix_socket}"
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def read_password(self) -> str | None:
        """The password, read when connecting (first line, newline stripped); re-checks the mode."""
        if self.password_file is None:
            return None
        check_secret_file(self.password_file)
        text = self.password_file.read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""


def load_mqtt_config(section: Mapping[str, Any], *, source: str = "<config>") -> MqttConfig:
    """Validate the ``[mqtt]`` table; errors name ``source``, the key and the reason."""
    try:
        return MqttConfig.model_validate(dict(section))
    except ValidationError as exc:
        raise MqttConfigError("\n".join(problem_lines(exc, source, prefix="mqtt"))) from None
