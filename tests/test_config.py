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
        ("[daemon]\nbogus = 1\n", "daemon.bogus", "unknown key"),
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


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("port = 5020", "port = 5020\ntimeout_s = nan"), "consoles.0.options.timeout_s"),
        (('driver = "modbus-tcp"', 'driver = "modbus-tcp"\npoll_hz = nan'), "consoles.0.poll_hz"),
        (('driver = "modbus-tcp"', 'driver = "modbus-tcp"\npoll_hz = inf'), "consoles.0.poll_hz"),
        (
            ('driver = "modbus-tcp"', 'driver = "modbus-tcp"\nsimulated = true\ntime_scale = nan'),
            "consoles.0.time_scale",
        ),
        (
            ('driver = "modbus-tcp"', 'driver = "modbus-tcp"\nlimits.max_extend_s = -inf'),
            "consoles.0.limits.max_extend_s",
        ),
        (
            ("port = 5020", 'port = 5020\n[mqtt]\nsite = "s"\ntelemetry_hz = nan'),
            "mqtt.telemetry_hz",
        ),
    ],
    ids=["option", "poll_hz-nan", "poll_hz-inf", "time_scale", "limit", "mqtt"],
)
def test_a_non_finite_number_is_refused_as_such(
    tmp_path: Path, edit: tuple[str, str], key: str
) -> None:
    """NaN or infinity is 'not a finite number', not 'less than or equal to 1000'
    (a NaN fails every comparison, so a range check named the wrong problem)."""
    f = tmp_path / "nan.toml"
    f.write_text(GOOD.replace(*edit, 1))
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert exc.value.problems == [f"{f}: {key}: input should be a finite number"]


def test_check_config_says_a_nan_is_not_a_finite_number(tmp_path: Path) -> None:
    f = tmp_path / "nan.toml"
    f.write_text(GOOD.replace('driver = "modbus-tcp"', 'driver = "modbus-tcp"\npoll_hz = nan'))
    r = _cryod("check-config", str(f))
    assert (r.returncode, r.stderr) == (
        2,
        f"{f}: consoles.0.poll_hz: input should be a finite number\n",
    )
