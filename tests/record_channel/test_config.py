"""The [record] section: off unless enabled, needs [mqtt] (its broker), takes its own
credentials, keeps its cursor beside the database unless told; errors name file and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cryod.daemon.config import ConfigError, load_config

BASE = """
[daemon]
database = "cryod.db"
control_socket = "cryod.sock"
site = "t"
[node]
id = "ws-1"
[[consoles]]
id = "c1"
driver = "modbus-tcp"
[consoles.options]
host = "127.0.0.1"
port = 5020
"""
MQTT = '[mqtt]\nhost = "127.0.0.1"\nport = 1883\nsite = "room-1"\nusername = "cryod-room-1-c1"\n'


def load(tmp_path: Path, extra: str) -> object:
    path = tmp_path / "cryod.toml"
    path.write_text(BASE + extra)
    return load_config(path, check_drivers=False)


def test_off_by_default(tmp_path: Path) -> None:
    loaded = load(tmp_path, MQTT)
    assert loaded.record_mqtt is None  # type: ignore[attr-defined]


def test_enabled_it_uses_the_mqtt_broker_with_its_own_user_and_client_id(tmp_path: Path) -> None:
    pw = tmp_path / "node.pw"
    pw.write_text("secret\n")
    os.chmod(pw, 0o600)
    extra = MQTT + f'[record]\nenabled = true\nusername = "ws-1"\npassword_file = "{pw}"\n'
    loaded = load(tmp_path, extra)
    mqtt = loaded.record_mqtt  # type: ignore[attr-defined]
    assert (mqtt.host, mqtt.port, mqtt.site) == ("127.0.0.1", 1883, "room-1")
    assert mqtt.username == "ws-1"
    assert mqtt.read_password() == "secret"
    assert mqtt.client_id == "cryod-record-ws-1"
    assert loaded.record_cursor == (tmp_path / "cryod.db.record-cursor").resolve()  # type: ignore[attr-defined]


def test_enabled_without_a_broker_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cryod\.toml: record\.enabled: .*needs \[mqtt\]"):
        load(tmp_path, "[record]\nenabled = true\n")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("rate_per_s = 0", "record.rate_per_s"),
        ("window = 50", "record.window"),
        ("colour = 1", "record.colour"),
        ('password_file = "x"', "password_file needs username"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, extra: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(tmp_path, MQTT + f"[record]\nenabled = true\n{extra}\n")


def test_a_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    pw = tmp_path / "node.pw"
    pw.write_text("secret\n")
    os.chmod(pw, 0o644)
    extra = MQTT + f'[record]\nenabled = true\nusername = "ws-1"\npassword_file = "{pw}"\n'
    with pytest.raises(ConfigError, match=r"record/mqtt\.password_file.*chmod 600"):
        load(tmp_path, extra)
