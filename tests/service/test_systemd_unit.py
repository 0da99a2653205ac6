"""The unit, sysusers and tmpfiles files: as systemd itself reads them.

Static checks of the directives run everywhere; the checks that ask systemd
(`systemd-analyze verify`, `security`, `systemd-sysusers`, `systemd-tmpfiles`)
need those tools (skip locally, fail in CI, like every real component).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "cryod.service"
SYSUSERS = SYSTEMD_DIR / "cryod.sysusers"
TMPFILES = SYSTEMD_DIR / "cryod.tmpfiles"
MAX_EXPOSURE = 2.0


def directives(text: str) -> dict[str, list[str]]:
    """Directive -> values in order (systemd allows repeats; configparser does not)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return directives(UNIT.read_text())


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(f"Service.{key}")
    assert values, f"Service.{key} missing"
    return values[-1]


def test_service_type_watchdog_and_restart(unit: dict[str, list[str]]) -> None:
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert 1 <= int(one(unit, "WatchdogSec").removesuffix("s")) <= 30
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "RestartSec")
    assert one(unit, "ExecStart") == "/opt/cryod/bin/cryod run --config /etc/cryod/cryod.toml"


def test_stop_timeout_leaves_room_for_the_consoles_safe_state(
    unit: dict[str, list[str]],
) -> None:
    """Every console's shutdown (safe state, confirmation) is capped by
    SHUTDOWN_BUDGET_S and they run in parallel; the log and MQTT need the rest."""
    from cryod.daemon.console_service import SHUTDOWN_BUDGET_S

    stop_s = int(one(unit, "TimeoutStopSec").removesuffix("s"))
    assert stop_s >= 2 * SHUTDOWN_BUDGET_S


def test_directories_identity_and_devices(unit: dict[str, list[str]]) -> None:
    assert one(unit, "StateDirectory") == "cryod"
    assert one(unit, "RuntimeDirectory") == "cryod"
    assert one(unit, "User") == "cryod"
    assert unit.get("Service.DynamicUser", ["no"])[-1] == "no"
    assert "dialout" in one(unit, "SupplementaryGroups").split()
    assert one(unit, "DevicePolicy") == "closed"
    assert unit["Service.DeviceAllow"] == ["char-ttyUSB rw", "char-ttyACM rw"]
    # PrivateDevices=yes would hide /dev/ttyUSB* and /dev/ttyACM*.
    assert unit.get("Service.PrivateDevices", ["no"])[-1] == "no"


def test_hardening_directives(unit: dict[str, list[str]]) -> None:
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "UMask": "0027",
        "IPAddressDeny": "any",
        "IPAddressAllow": "localhost",
        "LimitCORE": "0",
    }
    wrong = {k: unit.get(f"Service.{k}") for k, v in expected.items() if one(unit, k) != v}
    assert not wrong, wrong
    assert unit["Service.SystemCallFilter"][0] == "@system-service"


def _verifiable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointed at an existing executable, args kept.

    verify checks that the binary exists; /opt/cryod is not installed here.
    """
    stub = tmp_path / "cryod"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text() if text is None else text
    rewritten, count = re.subn(
        r"^ExecStart=/opt/cryod/bin/cryod ", f"ExecStart={stub} ", text, flags=re.MULTILINE
    )
    assert count == 1
    copy = tmp_path / "cryod.service"
    copy.write_text(rewritten)
    return copy


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.needs_systemd
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    result = _run(analyze, "verify", str(_verifiable_copy(tmp_path)))
    # verify exits 0 on a misspelled key and only warns: any output fails.
    assert (result.stdout + result.stderr) == "", result.stdout + result.stderr
    assert result.returncode == 0


@pytest.mark.needs_systemd
def test_systemd_analyze_verify_catches_a_misspelled_key(tmp_path: Path) -> None:
    """The check above can fail: a typo in the unit produces output."""
    analyze = require_binary("systemd-analyze")
    typo = UNIT.read_text().replace("ProtectHome=yes", "ProtectHomme=yes")
    result = _run(analyze, "verify", str(_verifiable_copy(tmp_path, typo)))
    assert "ProtectHomme" in result.stdout + result.stderr


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    return float(match.group(1))


@pytest.mark.needs_systemd
def test_systemd_analyze_security_rates_2_or_better(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    result = _run(analyze, "security", "--offline=true", str(_verifiable_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    score = exposure(result.stdout)
    assert score <= MAX_EXPOSURE, result.stdout
    # A bare unit scores far worse, so the parse reads a real rating.
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nExecStart={tmp_path / 'cryod'}\n")
    assert exposure(_run(analyze, "security", "--offline=true", str(bare)).stdout) > 5.0


@pytest.mark.needs_systemd
def test_sysusers_creates_cryod_in_dialout(tmp_path: Path) -> None:
    sysusers = require_binary("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = _run(sysusers, f"--root={root}", str(SYSUSERS))
    if result.returncode != 0 and os.geteuid() != 0:
        pytest.skip(f"systemd-sysusers --root needs root here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    passwd = (root / "etc/passwd").read_text()
    group = (root / "etc/group").read_text()
    assert re.search(r"^cryod:x:\d+:\d+:[^:]*:/var/lib/cryod:", passwd, re.MULTILINE), passwd
    dialout = re.search(r"^dialout:x:\d+:(.*)$", group, re.MULTILINE)
    assert dialout, group
    assert "cryod" in dialout.group(1).split(","), group

    bad = tmp_path / "bad.conf"
    bad.write_text(SYSUSERS.read_text() + "x cryod - nonsense\n")
    assert _run(sysusers, "--dry-run", f"--root={root}", str(bad)).returncode != 0


@pytest.mark.needs_systemd
def test_tmpfiles_creates_config_dir_readable_by_service(tmp_path: Path) -> None:
    sysusers = require_binary("systemd-sysusers")
    tmpfiles = require_binary("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles --create with owners needs root")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert _run(sysusers, f"--root={root}", str(SYSUSERS)).returncode == 0
    result = _run(tmpfiles, f"--root={root}", "--create", str(TMPFILES))
    assert result.returncode == 0, result.stderr
    cryod_group = re.search(r"^cryod:x:(\d+):", (root / "etc/group").read_text(), re.M)
    assert cryod_group
    gid = int(cryod_group.group(1))
    st = (root / "etc/cryod").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 0, gid)


MDWE_PROBE = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("unsupported", ctypes.get_errno())
    sys.exit(0)
try:  # the restriction is really in force
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("not enforced")
    sys.exit(1)
except OSError:
    pass
import asyncio, sqlite3
import aiomqtt, alembic, pydantic, pymodbus, serial, sqlalchemy, structlog  # noqa: F401
from cryod.daemon.logging import configure_logging, get_logger
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE t (x REAL)")
db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
db.commit()
db.close()
asyncio.run(asyncio.sleep(0.01))
assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41) == 42
configure_logging(stream=sys.stderr)
get_logger("probe").info("ok")
print("ok")
"""


def test_python_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes: the kernel's equivalent (PR_SET_MDWE, 6.3+).

    CPython without a JIT, our dependencies' extension modules, sqlite3 in WAL
    mode, asyncio and ctypes callbacks must all work with W+X mappings refused.
    """
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE, str(tmp_path / "probe.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.stdout.startswith("unsupported"):
        pytest.skip(f"kernel has no PR_SET_MDWE: {result.stdout.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok", result.stdout + result.stderr


@pytest.mark.needs_systemd
def test_the_anchor_file_drop_in_documented_for_the_unit_verifies(tmp_path: Path) -> None:
    """docs/install.md's drop-in for the anchor file ([anchors] file, on another
    filesystem): ReadWritePaths= and RequiresMountsFor= on the sandboxed unit verify
    clean, and the unit itself says where that goes."""
    analyze = require_binary("systemd-analyze")
    text = UNIT.read_text()
    assert "[Service] ReadWritePaths=/mnt/audit-anchors" in text  # the unit's own hint
    install = (UNIT.parents[1] / "docs" / "install.md").read_text()
    assert "ReadWritePaths=/mnt/audit-anchors" in install
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    with_drop_in = text.replace("[Unit]\n", f"[Unit]\nRequiresMountsFor={anchors}\n", 1).replace(
        "[Service]\n", f"[Service]\nReadWritePaths={anchors}\n", 1
    )
    result = _run(analyze, "verify", str(_verifiable_copy(tmp_path, with_drop_in)))
    assert (result.stdout + result.stderr) == "", result.stdout + result.stderr
