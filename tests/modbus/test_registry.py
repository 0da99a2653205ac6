"""Drivers are found by name through entry points; a third-party plug-in needs no edit here."""

from __future__ import annotations

import base64
import hashlib
import importlib
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryod.drivers.modbus import ModbusRtuDriver, ModbusTcpDriver
from cryod.drivers.registry import DriverNotFound, available_drivers, load_driver

PLUGIN = Path(__file__).parent / "plugin_pkg"


def test_built_in_drivers_by_name() -> None:
    assert load_driver("modbus-tcp") is ModbusTcpDriver
    assert load_driver("modbus-rtu") is ModbusRtuDriver
    assert {"modbus-tcp", "modbus-rtu", "serial-line"} <= set(available_drivers())


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(DriverNotFound, match=r"unknown driver 'modbus-tpc'.*modbus-tcp"):
        load_driver("modbus-tpc")


def build_wheel(src: Path, out_dir: Path) -> Path:
    """A wheel of the plug-in from its pyproject, with no build backend (works offline)."""
    meta = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    name, version = meta["name"].replace("-", "_"), meta["version"]
    dist_info = f"{name}-{version}.dist-info"
    eps = meta["entry-points"]
    files: dict[str, bytes] = {}
    for path in sorted((src / "cryod_demo_plugin").rglob("*.py")):
        files[path.relative_to(src).as_posix()] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {version}\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: cryod-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist_info}/entry_points.txt"] = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
        for group, entries in eps.items()
    ).encode()
    record = []
    for fname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{fname},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for fname, data in files.items():
            zf.writestr(fname, data)
    return wheel


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "site"
    wheel = build_wheel(PLUGIN, tmp_path)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (target / "cryod_demo_plugin" / "__init__.py").is_file()
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("cryod_demo_plugin", None)
        importlib.invalidate_caches()


async def test_plugin_found_and_used_by_name(installed_plugin: Path) -> None:
    assert "demo-console" in available_drivers()
    cls = load_driver("demo-console")
    driver = cls.from_options({"greeting": "hi"}, source="site.toml:driver")
    await driver.connect()
    ident = await driver.identify()
    assert ident.model == "hi"
    assert driver.stats.connected
    await driver.close()
    with pytest.raises(ValueError, match=r"site\.toml:driver\.bogus"):
        cls.from_options({"bogus": 1}, source="site.toml:driver")


def test_plugin_gone_after_removal() -> None:
    assert "demo-console" not in available_drivers()
