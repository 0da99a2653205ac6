"""The daemon config fails closed and names file, key and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cryod.daemon.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[daemon]
database = "cryod.db"
control_socket = "cryod.sock"
site = "t"
[[consoles]]
id = "c1"
driver = "modbus-tcp"
[consoles.options]
host = "127.0.0.1"
port = 5020
"""


def _cryod(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryod.daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["cryod.example.toml", "cryod.serial-rtu.example.toml"])
def test_shipped_examples_are_valid(name: str) -> None:
    r = _cryod("check-config", str(ROOT / "config" / name))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(GOOD)
    loaded = load_config(f)
    assert loaded.cfg.daemon.database == tmp_path / "cryod.db"
    assert loaded.cfg.daemon.control_socket == tmp_path / "cryod.sock"


@pytest.mark.parametrize(
    ("patch", "key", "reason"),
    [
        ("[daemon]\nbogus = 1\n", "daemon.bogus", "Extra inputs"),
        ("time_scale = 10.0\n", "consoles.0", "simulated console"),
        ("lease_timeout_ms = 5000\n", "consoles.0", "max_lease_timeout_ms"),
        ("poll_hz = -1\n", "consoles.0.poll_hz", "greater than 0"),
        ('driver = "no-such-driver"\n', "consoles.0.driver", "no-such-driver"),
    ],
)
def test_bad_config_names_file_key_and_reason(
    tmp_path: Path, patch: str, key: str, reason: str
) -> None:
    text = GOOD
    if patch.startswith("[daemon]"):
        text = text.replace("[daemon]\n", patch)
    elif patch.startswith("driver"):
        text = text.replace('driver = "modbus-tcp"\n', patch)
    else:
        text = text.replace('driver = "modbus-tcp"\n', 'driver = "modbus-tcp"\n' + patch)
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    msg = str(exc.value)
    assert str(f) in msg
    assert key in msg
    assert reason in msg
    r = _cryod("check-config", str(f))
    assert r.returncode == 2
    assert key in r.stderr
    r = _cryod("run", "--config", str(f))
    assert r.returncode == 2  # refuses to start, changes nothing
    assert not (tmp_path / "cryod.db").exists()


def test_poll_rate_the_link_cannot_carry_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "rtu.toml"
    f.write_text(
        GOOD.replace(
            'driver = "modbus-tcp"',
            'driver = "modbus-rtu"\npoll_hz = 200.0\nlease_timeout_ms = 1000',
        ).replace('host = "127.0.0.1"\nport = 5020', 'port = "/dev/ttyUSB0"\nbaudrate = 9600')
    )
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert "consoles.0.poll_hz" in str(exc.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
