"""The daemon's configuration: one TOML file, validated before anything connects.

Fails closed: unknown keys, out-of-range values, a time scale on a real
console, a lease longer than the site allows, a poll rate the link cannot
carry, unknown drivers and bad driver options are all errors, each naming
the file, the key and the reason. ``check`` collects every problem rather
than stopping at the first, so ``cryod check-config`` can print them all.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cryod.common.validation import problem_lines
from cryod.drivers.profile import Profile, ProfileError, load_profile
from cryod.drivers.tomlfile import read_toml

from .limits import ConsoleEnvelope, SafetyLimits

__all__ = [
    "AnchorsSection",
    "ConfigError",
    "ConsoleConfig",
    "DaemonConfig",
    "DaemonSection",
    "NodeSection",
    "RecordSection",
    "default_node_id",
    "load_config",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """Every problem found, one per line: ``file: key: reason``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    # NaN and infinity are refused as such ("finite number"), not by a range check
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DaemonSection(_Strict):
    database: Path = Path("/var/lib/cryod/cryod.db")
    control_socket: Path = Path("/run/cryod/control.sock")
    control_socket_mode: int = Field(default=0o660, ge=0o600, le=0o770)
    control_group: str | None = None
    site: str = Field(default="site", min_length=1, max_length=64)
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    require_study_id: bool = True  # NICE IPG747/HTG652: research use only
    # a batch is one transaction and one chain entry; every batch starts with the full
    # state of each console (docs/data-model.md "Samples"): a second of 20 Hz polls of
    # 8 probes is 1,320 values
    sample_batch_max: int = Field(default=2000, ge=1, le=10_000)
    sample_batch_interval_s: float = Field(default=1.0, gt=0, le=10)
    # samples outside a procedure are removed after this long (never a procedure's)
    sample_retention_h: float = Field(default=24.0, gt=0, le=24 * 366)

    @model_validator(mode="after")
    def _site(self) -> DaemonSection:
        if not _ID.match(self.site):
            raise ValueError(
                "site: letters, digits, '_', '.', '-' only (it is an MQTT topic level)"
            )
        if self.control_socket_mode & 0o007:
            raise ValueError("control_socket_mode must give others no access (e.g. 0o660)")
        return self


def default_node_id() -> str:
    """The host's short name as a node id (``[node] id`` should name the workstation)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0]).strip("-._")
    return name[:64] or "cryod"


class NodeSection(_Strict):
    """The workstation: its id names the database's one chain (docs/integrity.md) and is
    in every chain entry, anchor and export. Unique per workstation; one node may run
    several consoles. Default: the host name."""

    id: str = Field(default_factory=default_node_id, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _id(self) -> NodeSection:
        if not _ID.match(self.id):
            raise ValueError("id: letters, digits, '_', '.', '-' only (it is an MQTT topic level)")
        return self


class AnchorsSection(_Strict):
    """Where the chain's head goes besides the journal (docs/integrity.md)."""

    #: an append-only file, on another filesystem or a write-once share (ReadWritePaths=)
    file: Path | None = None
    #: also the retained MQTT head cryod/v1/{site}/{node}/audit/head (when [mqtt] is set)
    mqtt: bool = True
    #: at most one anchor per interval; procedure, cycle, alarm and export events at once
    interval_s: float = Field(default=1.0, ge=1.0, le=3600)
    #: a route that could not anchor a head for this long raises anchor_failed (medium)
    alarm_after_s: float = Field(default=30.0, gt=0, le=3600)


class RecordSection(_Strict):
    """The record channel (docs/record-channel.md): the chain, entry by entry, to the
    study collector over the [mqtt] broker, with its own credentials if given."""

    enabled: bool = False
    #: backlog drain bound: messages carrying a sample batch per second (a busy room
    #: makes 5); a message with no batch costs a tenth of one (record_channel.cursor)
    rate_per_s: float = Field(default=20.0, gt=0, le=5000)
    burst: int = Field(default=20, ge=1, le=10_000)
    #: messages handed to the broker and not yet acknowledged, at most (aiomqtt warns
    #: beyond 10 pending publishes)
    window: int = Field(default=8, ge=1, le=10)
    publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: the delivered-up-to cursor; default: beside the database (DATABASE.record-cursor)
    cursor_file: Path | None = None
    client_id: str | None = None
    #: the node's own broker user (the ACL lets it write its record tree only);
    #: default: [mqtt] username / password_file / tls
    username: str | None = None
    password_file: Path | None = None
    tls: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _ids(self) -> RecordSection:
        if self.client_id is not None and not _ID.match(self.client_id):
            raise ValueError("client_id: letters, digits, '_', '.', '-' only")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self


class ConsoleConfig(_Strict):
    id: str = Field(min_length=1, max_length=64)
    driver: str
    profile: str = "cryosim-8"  # register map / console envelope (built-in name or path)
    poll_hz: float = Field(default=20.0, gt=0, le=1000)
    lease_timeout_ms: int = Field(default=1000, ge=100, le=60000)
    time_scale: float = Field(default=1.0, ge=1.0, le=1000.0)
    simulated: bool = False  # must be true for a time scale; checked again at connect
    options: dict[str, Any] = Field(default_factory=dict)
    limits: SafetyLimits = SafetyLimits()

    @model_validator(mode="after")
    def _check(self) -> ConsoleConfig:
        if not _ID.match(self.id):
            raise ValueError("id: letters, digits, '_', '.', '-' only")
        if self.time_scale != 1.0 and not self.simulated:
            raise ValueError(
                "time_scale: accelerated time exists only with a simulated console "
                "(set simulated = true, and only for cryosim)"
            )
        if self.lease_timeout_ms > self.limits.max_lease_timeout_ms:
            raise ValueError(
                f"lease_timeout_ms {self.lease_timeout_ms} is longer than "
                f"limits.max_lease_timeout_ms {self.limits.max_lease_timeout_ms}"
            )
        if self.lease_timeout_ms < 3 * 1000 / self.poll_hz:
            raise ValueError(
                f"lease_timeout_ms {self.lease_timeout_ms} is shorter than three poll periods "
                f"at poll_hz {self.poll_hz}: one late poll would close the valves"
            )
        return self

    @property
    def poll_period_s(self) -> float:
        return 1.0 / self.poll_hz

    @property
    def lease_renew_s(self) -> float:
        """How often the poll loop renews the lease: a quarter of its timeout in whole
        poll periods, at least every poll (1 s lease at 20 Hz: every 5th poll).

        Renewing on every poll bought nothing for safety: a dead or stalled host
        still has its valves closed within one timeout of the last renewal. It
        cost a Modbus exchange per poll. A quarter keeps three quarters of the
        timeout as tolerance for a late poll."""
        polls = max(1, int(self.lease_timeout_ms / 4 / 1000 * self.poll_hz + 1e-9))
        return polls * self.poll_period_s


class DaemonConfig(_Strict):
    daemon: DaemonSection = DaemonSection()
    node: NodeSection = NodeSection()
    anchors: AnchorsSection = AnchorsSection()
    record: RecordSection = RecordSection()
    consoles: list[ConsoleConfig] = Field(min_length=1, max_length=16)
    mqtt: dict[str, Any] | None = None  # validated by cryod.daemon.telemetry.config

    @model_validator(mode="after")
    def _unique(self) -> DaemonConfig:
        ids = [c.id for c in self.consoles]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"console ids must be unique: {dupes}")
        return self


class LoadedConfig:
    """A validated config with what was derived from it (profiles, drivers, mqtt)."""

    def __init__(self, path: Path, cfg: DaemonConfig) -> None:
        self.path = path
        self.cfg = cfg
        self.profiles: dict[str, Profile] = {}
        self.envelopes: dict[str, ConsoleEnvelope] = {}
        self.mqtt: Any = None
        self.record_mqtt: Any = None  # the record channel's MqttConfig, when enabled
        self.record_cursor: Path | None = None


def _resolve(base: Path, value: str) -> str:
    """Relative paths in a config are relative to the config file."""
    if "/" in value and not value.startswith("/"):
        return str((base.parent / value).resolve())
    return value


def load_config(path: str | Path, *, check_drivers: bool = True) -> LoadedConfig:
    """Load, validate and cross-check; raise ConfigError listing every problem."""
    p = Path(path)
    src = str(p)
    try:
        raw = read_toml(p, ValueError)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from exc
    return load_config_data(raw, source=src, base=p, check_drivers=check_drivers)


def load_config_data(
    raw: Mapping[str, Any], *, source: str, base: Path, check_drivers: bool = True
) -> LoadedConfig:
    problems: list[str] = []
    try:
        cfg = DaemonConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problem_lines(exc, source)) from exc
    # relative paths are relative to the config file
    d = cfg.daemon
    db = d.database if d.database.is_absolute() else (base.parent / d.database).resolve()
    sock = (
        d.control_socket
        if d.control_socket.is_absolute()
        else (base.parent / d.control_socket).resolve()
    )
    anchors = cfg.anchors
    if anchors.file is not None and not anchors.file.is_absolute():
        anchors = anchors.model_copy(update={"file": (base.parent / anchors.file).resolve()})
    cfg = cfg.model_copy(
        update={
            "daemon": d.model_copy(update={"database": db, "control_socket": sock}),
            "anchors": anchors,
        }
    )
    loaded = LoadedConfig(base, cfg)
    for i, console in enumerate(cfg.consoles):
        key = f"consoles.{i}"
        try:
            profile = load_profile(_resolve(base, console.profile))
        except ProfileError as exc:
            problems.append(f"{source}: {key}.profile: {exc}")
            continue
        loaded.profiles[console.id] = profile
        loaded.envelopes[console.id] = ConsoleEnvelope.from_profile(profile)
        if check_drivers:
            problems.extend(_check_driver(source, key, console, base))
    if cfg.mqtt is not None:
        from .telemetry.config import load_mqtt_config

        try:
            loaded.mqtt = load_mqtt_config(cfg.mqtt, source=source)
        except ValueError as exc:
            problems.extend(str(exc).splitlines())
    if cfg.record.enabled:
        problems.extend(_record(loaded, source, base))
    if problems:
        raise ConfigError(problems)
    return loaded


def _record(loaded: LoadedConfig, source: str, base: Path) -> list[str]:
    """The record channel's broker settings: [mqtt] with [record]'s own credentials."""
    from .telemetry.config import load_mqtt_config

    cfg = loaded.cfg
    rec = cfg.record
    if cfg.mqtt is None:
        return [f"{source}: record.enabled: the record channel needs [mqtt] (its broker)"]
    data = {k: v for k, v in cfg.mqtt.items() if k not in ("console", "client_id")}
    data["enabled"] = True
    for key in ("username", "password_file", "tls"):
        value = getattr(rec, key)
        if value is not None:
            data[key] = str(value) if isinstance(value, Path) else value
    if rec.username is not None and rec.password_file is None:
        data.pop("password_file", None)
    try:
        mqtt = load_mqtt_config(data, source=source)
    except ValueError as exc:
        return [line.replace(": mqtt.", ": record/mqtt.", 1) for line in str(exc).splitlines()]
    node = cfg.node.id
    loaded.record_mqtt = mqtt.model_copy(
        update={"client_id": rec.client_id or f"cryod-record-{node}"}
    )
    db = cfg.daemon.database
    cursor = rec.cursor_file
    if cursor is None:
        cursor = db.with_name(db.name + ".record-cursor")
    elif not cursor.is_absolute():
        cursor = (base.parent / cursor).resolve()
    loaded.record_cursor = cursor
    return []


def driver_options(console: ConsoleConfig, base: Path) -> dict[str, Any]:
    """The driver's options with the console's profile filled in where it takes one."""
    opts = dict(console.options)
    if console.driver.startswith("modbus") and "profile" not in opts:
        opts["profile"] = _resolve(base, console.profile)
    return opts


def _check_driver(source: str, key: str, console: ConsoleConfig, base: Path) -> list[str]:
    from cryod.drivers.registry import load_driver

    try:
        cls = load_driver(console.driver)
    except (LookupError, ValueError, ImportError) as exc:
        return [f"{source}: {key}.driver: {exc}"]
    try:
        drv = cls.from_options(driver_options(console, base), source=f"{source}: {key}.options")
    except (ValueError, TypeError) as exc:
        return str(exc).splitlines()
    check = getattr(drv, "check_poll_rate", None)
    if check is not None:
        try:
            check(console.poll_hz)
        except ValueError as exc:
            return [f"{source}: {key}.poll_hz: {exc}"]
    return []
