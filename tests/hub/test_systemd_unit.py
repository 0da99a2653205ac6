"""cryohub's unit, sysusers and tmpfiles files, as systemd itself reads them.

The same approach as the daemon's (tests/service/test_systemd_unit.py):
static checks of the directives everywhere; ``systemd-analyze verify`` and
``security --offline=true`` (exposure at most 2.0), ``systemd-sysusers`` and
``systemd-tmpfiles`` where installed (skip locally, fail in CI).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.service.test_systemd_unit import MAX_EXPOSURE, _run, directives, exposure

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "cryohub.service"
SYSUSERS = SYSTEMD_DIR / "cryohub.sysusers"
TMPFILES = SYSTEMD_DIR / "cryohub.tmpfiles"


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return directives(UNIT.read_text())


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(f"Service.{key}")
    assert values, f"Service.{key} missing"
    return values[-1]


def test_notify_watchdog_restart_and_config_errors_not_restarted(
    unit: dict[str, list[str]],
) -> None:
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert 1 <= int(one(unit, "WatchdogSec").removesuffix("s")) <= 30
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "RestartPreventExitStatus").split() == ["2", "3"]
    assert one(unit, "ExecStart") == (
        "/opt/cryod/bin/cryohub run --config /etc/cryohub/cryohub.toml"
    )


def test_identity_and_hardening(unit: dict[str, list[str]]) -> None:
    expected = {
        "User": "cryohub",
        "StateDirectory": "cryohub",
        "UMask": "0077",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute": "yes",
        "IPAddressDeny": "any",
        "IPAddressAllow": "localhost",
        "LimitCORE": "0",
    }
    wrong = {k: unit.get(f"Service.{k}") for k, v in expected.items() if one(unit, k) != v}
    assert not wrong, wrong
    assert unit["Service.SystemCallFilter"][0] == "@system-service"
    assert unit.get("Service.DynamicUser", ["no"])[-1] == "no"


def _verifiable_copy(tmp_path: Path, text: str | None = None) -> Path:
    stub = tmp_path / "cryohub"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text() if text is None else text
    rewritten, count = re.subn(
        r"^ExecStart=/opt/cryod/bin/cryohub ", f"ExecStart={stub} ", text, flags=re.MULTILINE
    )
    assert count == 1
    copy = tmp_path / "cryohub.service"
    copy.write_text(rewritten)
    return copy


@pytest.mark.needs_systemd
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    result = _run(analyze, "verify", str(_verifiable_copy(tmp_path)))
    assert (result.stdout + result.stderr) == "", result.stdout + result.stderr
    assert result.returncode == 0
    typo = UNIT.read_text().replace("ProtectHome=yes", "ProtectHomme=yes")
    bad = _run(analyze, "verify", str(_verifiable_copy(tmp_path, typo)))
    assert "ProtectHomme" in bad.stdout + bad.stderr


@pytest.mark.needs_systemd
def test_systemd_analyze_security_rates_2_or_better(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    result = _run(analyze, "security", "--offline=true", str(_verifiable_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert exposure(result.stdout) <= MAX_EXPOSURE, result.stdout
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nExecStart={tmp_path / 'cryohub'}\n")
    assert exposure(_run(analyze, "security", "--offline=true", str(bare)).stdout) > 5.0


@pytest.mark.needs_systemd
def test_the_anchor_file_drop_in_from_the_units_hint_verifies(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    text = UNIT.read_text()
    assert "[Service] ReadWritePaths=/mnt/audit-anchors" in text
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    with_drop_in = text.replace("[Unit]\n", f"[Unit]\nRequiresMountsFor={anchors}\n", 1).replace(
        "[Service]\n", f"[Service]\nReadWritePaths={anchors}\n", 1
    )
    result = _run(analyze, "verify", str(_verifiable_copy(tmp_path, with_drop_in)))
    assert (result.stdout + result.stderr) == "", result.stdout + result.stderr


@pytest.mark.needs_systemd
def test_sysusers_and_tmpfiles_create_the_user_and_config_dirs(tmp_path: Path) -> None:
    sysusers = require_binary("systemd-sysusers")
    tmpfiles = require_binary("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-sysusers/tmpfiles --root with owners need root")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = _run(sysusers, f"--root={root}", str(SYSUSERS))
    assert result.returncode == 0, result.stderr
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^cryohub:x:\d+:\d+:[^:]*:/var/lib/cryohub:", passwd, re.MULTILINE), passwd
    result = _run(tmpfiles, f"--root={root}", "--create", str(TMPFILES))
    assert result.returncode == 0, result.stderr
    group = re.search(r"^cryohub:x:(\d+):", (root / "etc/group").read_text(), re.M)
    assert group
    for d in ("etc/cryohub", "etc/cryohub/studies"):
        st = (root / d).stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 0, int(group.group(1)))
