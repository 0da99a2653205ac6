"""Bad config, console-profile and protocol files: each is refused with file, key and
reason, and nothing starts.

``cryod check-config`` exits 2 listing the problems; ``cryod run`` refuses to
start (exit 2, no database, no control socket); ``cryosim serve --profile``
refuses a bad profile; the Modbus driver refuses one; ``load_protocol`` refuses
a bad protocol file. A protocol file sent to a live daemon is in
test_bad_control.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cryod.daemon.cli import main as cryod_main
from cryod.daemon.limits import SafetyLimits
from cryod.daemon.protocol_files import builtin_protocol_path, load_protocol
from cryod.daemon.protocols import ProtocolError
from cryod.drivers.modbus import ModbusTcpDriver
from cryod.drivers.profile import builtin_profile_path

from .rig import run_cli

TEN_MB = 10 * 1024 * 1024


def base_config(tmp: Path, *, daemon: str = "", console: str = "", tail: str = "") -> str:
    return f"""
[daemon]
database = "{tmp / "cryod.db"}"
control_socket = "{tmp / "cryod.sock"}"
site = "test"
{daemon}

[[consoles]]
id = "c1"
driver = "modbus-tcp"
simulated = true
time_scale = 10.0
poll_hz = 20.0
lease_timeout_ms = 500
{console}
[consoles.options]
host = "127.0.0.1"
port = 1502
{tail}
"""


def _write(tmp: Path, name: str, text: str | bytes) -> Path:
    p = tmp / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def _bad_profile(tmp: Path) -> Path:
    text = builtin_profile_path().read_text()
    text, n = re.subn(r"^probes = 8$", "probes = 800", text, count=1, flags=re.M)
    assert n == 1
    return _write(tmp, "bad-profile.toml", text)


# (id, config text builder, key the error must name, reason it must give)
CASES = [
    ("malformed", lambda t: "[daemon\nsite = ", "", "not valid TOML"),
    ("truncated", lambda t: base_config(t)[: base_config(t).index("[consoles.options]")]
     .replace('lease_timeout_ms = 500', 'lease_timeout_ms = '), "", "not valid TOML"),
    ("truncated-no-consoles", lambda t: base_config(t).split("[[consoles]]")[0], "consoles",
     "required"),
    # anything over 1 MiB is refused before parsing (drivers/tomlfile.py)
    ("oversized-garbage", lambda t: "x = [" * (TEN_MB // 5), "", "larger than"),
    ("oversized-value", lambda t: base_config(t).replace('site = "test"',
     'site = "' + "a" * TEN_MB + '"'), "", "larger than"),
    ("not-utf8", lambda t: b"\xff\xfe" + base_config(t).encode("utf-16-le"), "", "cannot read"),
    ("unknown-key", lambda t: base_config(t, daemon="debug_backdoor = true"),
     "daemon.debug_backdoor", "unknown key"),
    ("poll-rate", lambda t: base_config(t).replace("poll_hz = 20.0", "poll_hz = 5000.0"),
     "consoles.0.poll_hz", "less than or equal to 1000"),
    ("lease-too-long", lambda t: base_config(t).replace("lease_timeout_ms = 500",
     "lease_timeout_ms = 60001"), "consoles.0.lease_timeout_ms", "less than or equal"),
    ("lease-over-site-max", lambda t: base_config(t).replace("lease_timeout_ms = 500",
     "lease_timeout_ms = 5000"), "consoles.0", "max_lease_timeout_ms"),
    ("time-scale-on-real-console", lambda t: base_config(t).replace("simulated = true",
     "simulated = false"), "consoles.0", "time_scale"),
    ("socket-world-writable", lambda t: base_config(t, daemon="control_socket_mode = 0o777"),
     "daemon.control_socket_mode", "less than or equal"),
    ("socket-others-bit", lambda t: base_config(t, daemon="control_socket_mode = 0o661"),
     "daemon", "others no access"),
    ("limit-out-of-range", lambda t: base_config(t, console="limits.max_extend_s = 1e6"),
     "consoles.0.limits.max_extend_s", "less than or equal"),
    ("limit-wrong-type", lambda t: base_config(t, console='limits.floor_tip_c = "cold"'),
     "consoles.0.limits.floor_tip_c", "valid number"),
    ("unknown-driver", lambda t: base_config(t).replace('driver = "modbus-tcp"',
     'driver = "telnet"'), "consoles.0.driver", "telnet"),
    ("driver-option", lambda t: base_config(t).replace("port = 1502", "port = 70000"),
     "consoles.0.options", "port"),
    ("bad-profile-file", lambda t: base_config(t, console=f'profile = "{_bad_profile(t)}"'),
     "consoles.0.profile", "console.probes"),
    ("missing-profile-file", lambda t: base_config(t, console=f'profile = "{t}/nope.toml"'),
     "consoles.0.profile", "file not found"),
    ("mqtt-out-of-range", lambda t: base_config(t, tail='[mqtt]\nsite = "s"\nport = 70000'),
     "mqtt.port", "less than or equal"),
    ("mqtt-wildcard-site", lambda t: base_config(t, tail='[mqtt]\nsite = "#"'),
     "mqtt.site", "not a safe topic level"),
    ("duplicate-console", lambda t: base_config(t) + "[[consoles]]"
     + base_config(t).split("[[consoles]]")[1], "", "must be unique"),
]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "make", "key", "reason"), CASES, ids=[c[0] for c in CASES])
def test_check_config_names_file_key_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, make, key: str, reason: str
) -> None:
    path = _write(tmp_path, f"{case}.toml", make(tmp_path))
    rc = cryod_main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "no problem reported"
    assert all(ln.startswith(f"{path}: ") for ln in lines), err[:2000]
    assert any(f": {key}" in ln for ln in lines) if key else True, err[:2000]
    assert re.search(reason, err), err[:2000]
    # a 10 MB input is not echoed back
    assert len(err) < 64 * 1024
    assert not (tmp_path / "cryod.db").exists()


@pytest.mark.timeout(60)
def test_good_config_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Positive control: the base config of the cases above is valid."""
    path = _write(tmp_path, "good.toml", base_config(tmp_path))
    assert cryod_main(["check-config", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["malformed", "lease-over-site-max", "bad-profile-file"])
def test_cryod_run_refuses_to_start(tmp_path: Path, case: str) -> None:
    make, key = next((c[1], c[2]) for c in CASES if c[0] == case)
    path = _write(tmp_path, "cryod.toml", make(tmp_path))
    r = run_cli("daemon.cli", "run", "--config", str(path), timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert str(path) in r.stderr
    assert key in r.stderr
    # nothing was started or created
    assert not (tmp_path / "cryod.db").exists()
    assert not (tmp_path / "cryod.sock").exists()
    assert "ready" not in r.stdout


# ---- console profiles -------------------------------------------------------
def _profile_cases(tmp: Path) -> list[tuple[str, Path, str]]:
    good = builtin_profile_path().read_text()
    return [
        ("malformed", _write(tmp, "p-malformed.toml", good.replace("[console]", "[console")),
         "not valid TOML"),
        ("truncated", _write(tmp, "p-truncated.toml", good[: len(good) // 3]), r"registers|Field"),
        ("oversized", _write(tmp, "p-oversized.toml",
         good.replace('model = "CRYOSIM-8"', 'model = "' + "M" * TEN_MB + '"')), "larger than"),
        ("unknown-key", _write(tmp, "p-unknown.toml",
         good.replace('gas = "argon"', 'gas = "argon"\nturbo = true')), "console.turbo"),
        ("out-of-range", _bad_profile(tmp), "console.probes"),
        ("bad-gas", _write(tmp, "p-gas.toml", good.replace('gas = "argon"', 'gas = "helium"')),
         "console.gas"),
        ("missing", tmp / "p-missing.toml", "file not found"),
    ]  # fmt: skip


@pytest.mark.timeout(120)
def test_cryosim_serve_refuses_a_bad_profile(tmp_path: Path) -> None:
    for case, path, reason in _profile_cases(tmp_path):
        r = run_cli(
            "simulators.cli",
            "serve",
            "--profile",
            str(path),
            "--modbus-tcp",
            "127.0.0.1:0",
            timeout=30,
        )
        assert r.returncode == 2, (case, r.stdout[-500:], r.stderr[-1000:])
        assert str(path) in r.stderr, (case, r.stderr[-1000:])
        assert re.search(reason, r.stderr), (case, r.stderr[-1000:])
        assert "listening on" not in r.stdout, case


@pytest.mark.timeout(60)
def test_driver_refuses_a_bad_profile(tmp_path: Path) -> None:
    for case, path, reason in _profile_cases(tmp_path):
        with pytest.raises(ValueError, match=reason) as info:
            ModbusTcpDriver.from_options(
                {"host": "127.0.0.1", "port": 1502, "profile": str(path)}, source="test: opts"
            )
        assert str(path) in str(info.value), case


# ---- protocol files --------------------------------------------------------
def _protocol_cases(tmp: Path) -> list[tuple[str, Path, str]]:
    good = builtin_protocol_path("classic-double-90").read_text()
    many = good + "\n".join(['\n[[steps]]\nkind = "thaw"\nmode = "passive"\nduration_s = 10'] * 25)
    return [
        ("malformed", _write(tmp, "x-malformed.toml", good.replace("[[steps]]", "[[steps]", 1)),
         r"<toml>: not valid TOML"),
        ("truncated", _write(tmp, "x-truncated.toml", good[: good.index("[[steps]]")]),
         r": steps: required"),
        ("oversized", _write(tmp, "x-oversized.toml", good.replace(
            'description = "', 'description = "' + "d" * TEN_MB, 1)),
         r"<file>: \d+ bytes is larger than"),
        ("oversized-garbage", _write(tmp, "x-garbage.toml", b"\x00" * TEN_MB),
         r"larger than|not valid TOML|cannot read"),
        ("duration", _write(tmp, "x-duration.toml", good.replace("duration_s = 90",
         "duration_s = 100000", 1)), r"steps\.0\.duration_s"),
        ("too-cold", _write(tmp, "x-cold.toml", good.replace("target_tip_c = -60.0",
         "target_tip_c = -300.0", 1)), r"steps\.0\.target_tip_c"),
        ("unknown-key", _write(tmp, "x-unknown.toml", good.replace("reach_within_s = 45",
         "reach_within_s = 45\nignore_limits = true", 1)), r"ignore_limits"),
        ("too-many-steps", _write(tmp, "x-many.toml", many), r"steps"),
        ("over-site-limit", _write(tmp, "x-long.toml", good.replace("duration_s = 90",
         "duration_s = 400", 1)), r"steps\.0|max_freeze"),
        ("wrong-schema", _write(tmp, "x-schema.toml", good.replace("cryod.protocol/1",
         "cryod.protocol/9")), r"schema"),
    ]  # fmt: skip


@pytest.mark.timeout(60)
def test_load_protocol_refuses_bad_files(tmp_path: Path) -> None:
    limits = SafetyLimits()
    caps = ["active_thaw_helium", "skin_channel", "console_limits"]
    # positive control: the file every case is derived from loads
    assert load_protocol(builtin_protocol_path("classic-double-90"), limits, -150.0, caps).steps
    for case, path, reason in _protocol_cases(tmp_path):
        with pytest.raises(ProtocolError) as info:
            load_protocol(str(path), limits, -150.0, caps)
        text = str(info.value)
        assert info.value.problems, case
        assert all(p.source == str(path) for p in info.value.problems), (case, text[:500])
        assert re.search(reason, text), (case, text[:1000])
        assert len(text) < 64 * 1024, case
