"""The collector's configuration: one TOML file, validated before anything connects.

Fails closed and lists every problem at once, one line each
(``<file>: <key>: <reason>``): unknown keys, a database URL with a password
in it (it belongs in ``password_file``), a secret file (database or broker
password, TLS client key) that is missing or that group or others may read
(mode 0600, or refused), a study profile that does not load, an anchor file
whose directory does not exist. Relative paths are relative to the config
file. ``cryohub check-config FILE`` prints the list and exits 2.

```toml
[collector]
id = "study-hub"                  # names the collector's own audit chain
log_level = "info"

[database]
url = "postgresql+psycopg://cryohub@db.example.org/cryohub"   # or sqlite:////var/lib/...
password_file = "/etc/cryohub/database.password"               # optional, mode 0600

[broker]                          # the record channel (the ingest shell uses it)
host = "broker.example.org"
port = 8883
username = "cryohub"
password_file = "/etc/cryohub/broker.password"
client_id = "cryohub"             # fixed: the persistent session is keyed by it
session_expiry_s = 604800
tls = { ca_file = "/etc/cryohub/ca.pem", cert_file = "...", key_file = "..." }

[studies]
profiles_dir = "/etc/cryohub/studies"   # every *.toml a study profile

[anchors]
file = "/mnt/audit-anchors/cryohub.jsonl"   # another filesystem / write-once share
journal_socket = "/dev/log"
```
"""

from __future__ import annotations

import os
import re
import ssl
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from cryod.common.validation import problem_lines
from cryod.research.profile import StudyProfile, StudyProfileError, load_study_profile

__all__ = [
    "AnchorsSection",
    "BrokerSection",
    "CollectorSection",
    "ConfigError",
    "DatabaseSection",
    "HubConfig",
    "LoadedConfig",
    "check_secret_file",
    "load_config",
]

DEFAULT_CONFIG = Path("/etc/cryohub/cryohub.toml")
MAX_TOML_BYTES = 1024 * 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DRIVERS = {"sqlite": "sqlite", "sqlite+pysqlite": "sqlite", "postgresql": "postgresql+psycopg",
            "postgresql+psycopg": "postgresql+psycopg"}  # fmt: skip


class ConfigError(ValueError):
    """Every problem found, one per line: ``file: key: reason``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def check_secret_file(path: Path) -> Path:
    """A secret is a regular file only its owner may read or write (0600 or 0400)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ValueError(
            f"refusing secret file {path}: mode {mode:04o} lets group or others read or "
            f"write it (chmod 600 {path})"
        )
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not readable by this user")
    return path


def _public_file(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"{path} does not exist or is not readable")
    return path


SecretFile = Annotated[Path, AfterValidator(check_secret_file)]
PublicFile = Annotated[Path, AfterValidator(_public_file)]


def _node_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError("letters, digits, '_', '.', '-' only, at most 64")
    return value


NodeId = Annotated[str, AfterValidator(_node_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectorSection(_Strict):
    #: the node id of the collector's own audit chain (in every entry and anchor)
    id: NodeId = "cryohub"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class DatabaseSection(_Strict):
    url: str = "sqlite:////var/lib/cryohub/cryohub.db"
    password_file: SecretFile | None = None


class TlsSection(_Strict):
    ca_file: PublicFile
    cert_file: PublicFile | None = None
    key_file: SecretFile | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate)")
        return self

    @model_validator(mode="after")
    def _loads(self) -> TlsSection:
        """The files are what they claim: found at start, not on the first connection."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"ca_file {self.ca_file}: not a PEM CA certificate ({_why(exc)})"
            ) from None
        if self.cert_file is not None and self.key_file is not None:
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"cert_file {self.cert_file} with key_file {self.key_file}: not a PEM "
                    f"certificate and its key ({_why(exc)})"
                ) from None
        return self


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc)


class BrokerSection(_Strict):
    host: str = Field(default="localhost", min_length=1, max_length=255)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = Field(default=None, min_length=1, max_length=64)
    password_file: SecretFile | None = None
    #: fixed, so the broker keeps the session (and queues) across restarts
    client_id: NodeId = "cryohub"
    #: how long the broker keeps the session while the collector is away
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=3600, le=90 * 24 * 3600)
    #: QoS 1 messages the broker may send before the collector acknowledges them
    #: (MQTT v5 flow control; also the most messages committed in one transaction)
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    tls: TlsSection | None = None

    @model_validator(mode="after")
    def _remote_needs_tls(self) -> BrokerSection:
        if self.tls is None and self.host not in ("localhost", "127.0.0.1", "::1"):
            raise ValueError(
                f"host {self.host}: a broker that is not on loopback needs [broker.tls]"
            )
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self


class StudiesSection(_Strict):
    profiles_dir: Path | None = None


class AnchorsSection(_Strict):
    #: an append-only file on another filesystem or a write-once share
    file: Path
    #: the syslog socket journald reads (the journal route); none: that route is off
    journal_socket: Path | None = Path("/dev/log")


class HubConfig(_Strict):
    collector: CollectorSection = CollectorSection()
    database: DatabaseSection = DatabaseSection()
    broker: BrokerSection | None = None
    studies: StudiesSection = StudiesSection()
    anchors: AnchorsSection


class LoadedConfig:
    """A validated config, with its database URL resolved and its study profiles loaded."""

    def __init__(self, path: Path, cfg: HubConfig, url: URL, profiles: list[StudyProfile]) -> None:
        self.path = path
        self.cfg = cfg
        self.url = url
        self.profiles = profiles

    @property
    def node(self) -> str:
        return self.cfg.collector.id

    @property
    def anchor_file(self) -> Path:
        return self.cfg.anchors.file

    def profile_book(self) -> dict[tuple[str, str], str]:
        """(profile id, version) -> content hash, for the ingest core."""
        return {(p.study.id, p.version): p.content_hash for p in self.profiles}


def _relative(base: Path, value: Any) -> Any:
    if isinstance(value, str) and value and not value.startswith("/"):
        return str((base.parent / value).resolve())
    return value


def _with_relative_paths(raw: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Paths in the config are relative to the config file."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    spots = [("database", "password_file"), ("broker", "password_file"),
             ("studies", "profiles_dir"), ("anchors", "file")]  # fmt: skip
    for section, key in spots:
        if isinstance(out.get(section), dict) and key in out[section]:
            out[section][key] = _relative(base, out[section][key])
    broker = out.get("broker")
    if isinstance(broker, dict) and isinstance(broker.get("tls"), dict):
        tls = dict(broker["tls"])
        for key in ("ca_file", "cert_file", "key_file"):
            if key in tls:
                tls[key] = _relative(base, tls[key])
        broker["tls"] = tls
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_TOML_BYTES:
            raise ConfigError([f"{path}: {size} bytes is larger than {MAX_TOML_BYTES}"])
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def database_url(source: str, base: Path, section: DatabaseSection) -> tuple[URL | None, list[str]]:
    key = f"{source}: database.url"
    try:
        url = make_url(section.url)
    except ArgumentError:
        return None, [f"{key}: not a database URL"]
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        return None, [f"{key}: {url.drivername!r}: use postgresql+psycopg:// or sqlite:///"]
    problems = []
    if url.password is not None:
        problems.append(f"{key}: holds a password: put it in database.password_file (mode 0600)")
    url = url.set(drivername=driver)
    if driver == "sqlite":
        if not url.database or url.database == ":memory:":
            return None, [f"{key}: a SQLite database is a file path (sqlite:////path/to.db)"]
        db_path = Path(url.database)
        if not db_path.is_absolute():
            db_path = (base.parent / db_path).resolve()
            url = url.set(database=str(db_path))
        if not db_path.parent.is_dir():
            problems.append(f"{key}: directory {db_path.parent} does not exist")
        if section.password_file is not None:
            problems.append(f"{source}: database.password_file: SQLite has no password")
    elif not url.database:
        problems.append(f"{key}: names no database")
    return url, problems


def load_config(path: str | Path) -> LoadedConfig:
    """Load, validate and cross-check; raise ``ConfigError`` listing every problem."""
    p = Path(path)
    source = str(p)
    raw = _with_relative_paths(_read(p), p)
    try:
        cfg = HubConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problem_lines(exc, source)) from None
    url, problems = database_url(source, p, cfg.database)
    profiles: list[StudyProfile] = []
    folder = cfg.studies.profiles_dir
    if folder is not None:
        if not folder.is_dir():
            problems.append(f"{source}: studies.profiles_dir: {folder} is not a directory")
        else:
            seen: dict[tuple[str, str], Path] = {}
            for file in sorted(folder.glob("*.toml")):
                try:
                    profile = load_study_profile(file)
                except StudyProfileError as exc:
                    problems.extend(
                        f"{source}: studies.profiles_dir: {line}" for line in str(exc).splitlines()
                    )
                    continue
                ident = (profile.study.id, profile.version)
                if ident in seen:
                    problems.append(
                        f"{source}: studies.profiles_dir: {file.name} and {seen[ident].name} are "
                        f"both {ident[0]} version {ident[1]}"
                    )
                seen[ident] = file
                profiles.append(profile)
    anchor_dir = cfg.anchors.file.parent
    if not anchor_dir.is_dir():
        problems.append(f"{source}: anchors.file: directory {anchor_dir} does not exist")
    elif cfg.anchors.file.exists() and not cfg.anchors.file.is_file():
        problems.append(f"{source}: anchors.file: {cfg.anchors.file} is not a regular file")
    if problems or url is None:
        raise ConfigError(problems)
    return LoadedConfig(p, cfg, url, profiles)
