"""Protocol files: every kind of bad file names file, key and reason; the
shipped protocols load and are marked as examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryod.daemon.limits import SafetyLimits
from cryod.daemon.protocol_files import MAX_PROTOCOL_BYTES, builtin_protocol_names, load_protocol
from cryod.daemon.protocols import ProtocolError, ad_hoc_freeze, ad_hoc_thaw

from .helpers import CAPS, ENV, LIMITS

GOOD = """schema = "cryod.protocol/1"

[protocol]
name = "t"
title = "t"
source = "test"
example = true

[[steps]]
kind = "freeze"
duration_s = 90
target_tip_c = -60.0
reach_within_s = 45

[[steps]]
kind = "thaw"
mode = "passive"
duration_s = 30
"""


def load(tmp_path: Path, text: str, **kw: object) -> object:
    f = tmp_path / "p.toml"
    f.write_text(text)
    return load_protocol(
        f,
        kw.get("limits", LIMITS),  # type: ignore[arg-type]
        kw.get("min_tip", ENV.min_tip_c),  # type: ignore[arg-type]
        kw.get("caps", CAPS),  # type: ignore[arg-type]
    )


def problems(tmp_path: Path, text: str, **kw: object) -> list[tuple[str, str, str]]:
    with pytest.raises(ProtocolError) as exc:
        load(tmp_path, text, **kw)
    out = [(p.source, p.key, p.reason) for p in exc.value.problems]
    for source, _, _ in out:
        assert source == str(tmp_path / "p.toml")
    assert str(tmp_path / "p.toml") in str(exc.value)
    return out


def test_good_file_loads(tmp_path: Path) -> None:
    p = load(tmp_path, GOOD)
    assert p.total_freeze_s == 90.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("edit", "key", "reason"),
    [
        (("example = true", "example = true\ncolour = 'red'"), "protocol.colour", "unknown key"),
        (("duration_s = 30", "duration_s = 30\nspeed = 2"), "steps.1.speed", "unknown key"),
        (("duration_s = 90", "duration_s = -90"), "steps.0.duration_s", "greater than 0"),
        (("duration_s = 90", "duration_s = 0"), "steps.0.duration_s", "greater than 0"),
        (("duration_s = 90", "duration_s = 1e6"), "steps.0.duration_s", "less than or equal"),
        (("duration_s = 90", "duration_s = 400"), "steps.0.duration_s", "max_freeze_s_per_cycle"),
        # NaN/infinity: said as such, not as a failed range check ("≤ 7200")
        (("duration_s = 90", "duration_s = nan"), "steps.0.duration_s", "finite number"),
        (("duration_s = 30", "duration_s = inf"), "steps.1.duration_s", "finite number"),
        (("target_tip_c = -60.0", "target_tip_c = -inf"), "steps.0.target_tip_c", "finite number"),
        (
            ("target_tip_c = -60.0", "target_tip_c = -170.0"),
            "steps.0.target_tip_c",
            "colder than the console",
        ),
        (("target_tip_c = -60.0", "target_tip_c = 5.0"), "steps.0.target_tip_c", "less than 0"),
        (
            ("reach_within_s = 45", "reach_within_s = 100"),
            "steps.0",
            "reach_within_s must not exceed",
        ),
        (('mode = "passive"', 'mode = "sideways"'), "steps.1.mode", "'passive' or 'active'"),
        (('kind = "thaw"', 'kind = "warm"'), "steps.1", "does not match any of the expected tags"),
        (
            ('schema = "cryod.protocol/1"', 'schema = "cryod.protocol/9"'),
            "schema",
            "cryod.protocol/1",
        ),
        (("example = true", ""), "protocol.example", "required"),
        (("duration_s = 30", ""), "steps.1", "needs duration_s, until_tip_above_c or both"),
    ],
)
def test_bad_file_names_key_and_reason(
    tmp_path: Path, edit: tuple[str, str], key: str, reason: str
) -> None:
    got = problems(tmp_path, GOOD.replace(*edit, 1))
    assert any(k == key and reason in r for _, k, r in got), got


def test_total_freeze_above_max(tmp_path: Path) -> None:
    lim = SafetyLimits(max_freeze_s_per_cycle=100, max_freeze_s_per_protocol=150)
    text = (
        GOOD
        + '\n[[steps]]\nkind = "freeze"\nduration_s = 90\n'
        + "target_tip_c = -60.0\nreach_within_s = 45\n"
    )
    got = problems(tmp_path, text, limits=lim)
    assert ("steps", "total freeze time 180.0 s exceeds max_freeze_s_per_protocol 150.0 s") in [
        (k, r) for _, k, r in got
    ]


def test_target_colder_than_this_console(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD, min_tip=-50.0)  # an N2O-like console
    assert any(k == "steps.0.target_tip_c" and "colder than the console" in r for _, k, r in got)


def test_active_thaw_without_capability(tmp_path: Path) -> None:
    got = problems(
        tmp_path, GOOD.replace('"passive"', '"active"'), caps=frozenset({"console_limits"})
    )
    assert [(k, "active" in r) for _, k, r in got] == [("steps.1.mode", True)]


def test_freeze_after_freeze_rejected(tmp_path: Path) -> None:
    text = GOOD.replace(
        '[[steps]]\nkind = "thaw"\nmode = "passive"\nduration_s = 30\n',
        '[[steps]]\nkind = "freeze"\nduration_s = 30\ntarget_tip_c = -60.0\nreach_within_s = 20\n',
    )
    got = problems(tmp_path, text)
    assert any(k == "steps.1" and "freeze directly after a freeze" in r for _, k, r in got)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD + "\n[[steps]\n")
    assert got[0][1] == "<toml>"
    assert "not valid TOML" in got[0][2]
    with pytest.raises(ProtocolError, match="file not found"):
        load_protocol(tmp_path / "nope.toml", LIMITS, -150.0, CAPS)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("duration_s = 90", "duration_s = 400").replace(
        "target_tip_c = -60.0", "target_tip_c = -170.0"
    )
    keys = {k for _, k, _ in problems(tmp_path, text)}
    assert {"steps.0.duration_s", "steps.0.target_tip_c"} <= keys


def test_shipped_protocols_load_and_are_examples() -> None:
    names = builtin_protocol_names()
    assert {"morton-neuroma-cazzato2016", "classic-double-90", "stump-neuroma-prologo2017"} <= set(
        names
    )
    for n in names:
        p = load_protocol(n, LIMITS, ENV.min_tip_c, CAPS)
        assert p.protocol.example is True
        assert p.protocol.source
        assert p.name == n
        assert p.has_freeze
    morton = load_protocol("morton-neuroma-cazzato2016", LIMITS, ENV.min_tip_c, CAPS)
    assert morton.total_freeze_s == 150.0
    assert load_protocol("classic-double-90", LIMITS, ENV.min_tip_c, CAPS).total_freeze_s == 180.0


def test_shipped_protocols_fit_an_n2o_console() -> None:
    for n in builtin_protocol_names():
        load_protocol(n, LIMITS, -88.0, frozenset({"console_limits"}))


def test_ad_hoc_commands_use_the_same_limits() -> None:
    assert ad_hoc_freeze(90, LIMITS, -150.0, CAPS).total_freeze_s == 90
    with pytest.raises(ProtocolError, match=r"<ad-hoc freeze>: steps\.0\.duration_s"):
        ad_hoc_freeze(LIMITS.max_freeze_s_per_cycle + 1, LIMITS, -150.0, CAPS)
    with pytest.raises(ProtocolError, match="greater than 0"):
        ad_hoc_freeze(-5, LIMITS, -150.0, CAPS)
    with pytest.raises(ProtocolError, match="max_thaw_s"):
        ad_hoc_thaw(LIMITS.max_thaw_s + 1, "passive", LIMITS, -150.0, CAPS)
    t = ad_hoc_thaw(None, "passive", LIMITS, -150.0, CAPS)
    assert t.steps[0].until_tip_above_c == LIMITS.ad_hoc_thaw_until_c  # type: ignore[union-attr]


def test_site_limits_reject_unknown_and_inconsistent_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        SafetyLimits.model_validate({"max_freeze_s": 10})
    with pytest.raises(ValueError, match="max_freeze_s_per_cycle must be <="):
        SafetyLimits(max_freeze_s_per_cycle=700)


def test_limits_for_sim_speed_scale_physics_only() -> None:
    fast = LIMITS.for_sim_speed(10.0)
    assert fast.tc_max_rate_c_per_s == LIMITS.tc_max_rate_c_per_s * 10
    assert fast.cooling_check_s == LIMITS.cooling_check_s / 10
    assert fast.max_freeze_s_per_cycle == LIMITS.max_freeze_s_per_cycle
    assert fast.on_time_grace_s == LIMITS.on_time_grace_s
    with pytest.raises(ValueError, match="speed"):
        LIMITS.for_sim_speed(0)


def test_the_size_cap_is_256_kib(tmp_path: Path) -> None:
    """docs/protocol-format.md promises 256 KiB: a file of exactly that size loads,
    one byte more is refused by its size, naming the file."""
    assert MAX_PROTOCOL_BYTES == 256 * 1024
    padding = "# " + "x" * (MAX_PROTOCOL_BYTES - len(GOOD.encode()) - 3) + "\n"
    at_cap = GOOD + padding
    assert len(at_cap.encode()) == MAX_PROTOCOL_BYTES
    assert load(tmp_path, at_cap).total_freeze_s == 90.0  # type: ignore[attr-defined]
    got = problems(tmp_path, at_cap + "\n")
    assert got == [
        (
            str(tmp_path / "p.toml"),
            "<file>",
            f"{MAX_PROTOCOL_BYTES + 1} bytes is larger than {MAX_PROTOCOL_BYTES}",
        )
    ]


def test_the_protocol_core_does_no_io() -> None:
    """``protocols`` is the pure core: the file reading lives in ``protocol_files``."""
    import ast

    import cryod.daemon.protocols as core

    tree = ast.parse(Path(core.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    io_modules = {"tomllib", "importlib", "pathlib", "os", "io", "asyncio", "shutil", "socket"}
    assert not imported & io_modules, imported & io_modules
    calls = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "open" not in calls
    # and the loader is not reachable from the core
    assert not hasattr(core, "load_protocol")
    assert not hasattr(core, "builtin_protocol_path")
