"""The web app's pure parts: throttle, sessions, scope, board fold, plot decimation."""

from __future__ import annotations

import datetime as dt
import re

from cryod.hub.access import Grant, Role
from cryod.hub.web.board import OFFLINE_AFTER_S, Board, parse_topic
from cryod.hub.web.plot import Shade, decimate, plot_svg
from cryod.hub.web.scope import may_read_audit, may_read_subject, may_see_room
from cryod.hub.web.sessions import SessionStore
from cryod.hub.web.throttle import LoginThrottle

WALL = dt.datetime(2026, 3, 1, 14, 7, 30, tzinfo=dt.UTC)


# ---- throttle -----------------------------------------------------------------------------
def test_an_account_slows_after_five_failures_and_is_never_locked() -> None:
    t = LoginThrottle()
    now = 0.0
    for i in range(5):
        assert t.wait_s("nurse", f"10.0.0.{i}", now) == 0.0
        t.failed("nurse", f"10.0.0.{i}", now)
    assert t.wait_s("nurse", "10.0.0.99", now) == 1.0  # from any address
    waits = []
    for _ in range(30):  # an attacker keeps failing, each time as soon as allowed
        now += t.wait_s("nurse", "10.9.9.9", now)
        t.failed("NURSE", f"10.1.{len(waits)}.1", now)
        waits.append(t.wait_s("nurse", "10.9.9.9", now))
    assert max(waits) == 30.0  # the cap: the nurse never waits longer than this
    assert t.wait_s("nurse", "10.9.9.9", now + 30.0) == 0.0
    t.succeeded("nurse")
    assert t.wait_s("nurse", "10.9.9.9", now) == 0.0


def test_an_address_slows_after_ten_failures_over_any_accounts() -> None:
    t = LoginThrottle()
    for i in range(10):
        t.failed(f"user{i}", "192.0.2.1", 5.0)
    assert t.wait_s("someone-else", "192.0.2.1", 5.0) == 1.0
    assert t.wait_s("someone-else", "192.0.2.2", 5.0) == 0.0
    t.succeeded("user3")  # a success does not clear the address
    assert t.wait_s("someone-else", "192.0.2.1", 5.0) == 1.0


def test_failures_are_forgotten_after_the_window() -> None:
    t = LoginThrottle(window_s=900.0)
    for _ in range(8):
        t.failed("nurse", "a", 0.0)
    assert t.wait_s("nurse", "b", 0.0) == 8.0
    assert t.wait_s("nurse", "b", 901.0) == 0.0


def test_the_throttle_tables_stay_bounded() -> None:
    t = LoginThrottle(max_entries=50)
    for i in range(500):
        t.failed(f"u{i}", f"a{i}", float(i))
    assert len(t._accounts) <= 50
    assert len(t._addresses) <= 50


# ---- sessions -----------------------------------------------------------------------------
def test_sessions_idle_out_and_end_everywhere() -> None:
    store = SessionStore(idle_s=60.0, lifetime_s=3600.0)
    tok1, s1 = store.start("cora", 0.0)
    tok2, _ = store.start("cora", 0.0)
    tok3, _ = store.start("ivan", 0.0)
    assert tok1 != tok2
    assert store.get(tok1, 59.0) is s1
    assert store.get(tok1, 118.0) is s1  # renewed at 59
    assert store.get(tok2, 118.0) is None  # idle since 0
    assert store.get(tok1, 170.0, renew=False) is s1
    assert store.get(tok1, 179.0) is None  # the stream's reads never renewed it
    tok4, _ = store.start("cora", 200.0)
    assert store.end_all("cora") == 1
    assert store.get(tok4, 201.0) is None
    assert store.get(tok3, 30.0) is not None
    assert store.get("forged", 1.0) is None


def test_a_session_ends_after_its_lifetime_whatever_happens() -> None:
    store = SessionStore(idle_s=60.0, lifetime_s=300.0)
    tok, _ = store.start("cora", 0.0)
    for t in range(30, 300, 30):
        assert store.get(tok, float(t)) is not None
    assert store.get(tok, 301.0) is None


# ---- scope --------------------------------------------------------------------------------
def test_site_staff_see_only_their_sites_and_admins_no_subjects() -> None:
    cora = (Grant(Role.COORDINATOR, "S1", "leeds"),)
    ivan = (Grant(Role.INVESTIGATOR, "S1", None),)
    ada = (Grant(Role.ADMIN),)
    mona = (Grant(Role.MONITOR, "S1"),)
    assert may_read_subject(cora, "S1", "leeds")
    assert not may_read_subject(cora, "S1", "york")
    assert not may_read_subject(cora, "S2", "leeds")
    assert may_read_subject(ivan, "S1", "york")
    assert not may_read_subject(ivan, None, "york")
    assert not may_read_subject(ada, "S1", "leeds")
    assert may_see_room(cora, "leeds")
    assert not may_see_room(cora, "york")
    assert may_see_room(ada, "york")
    assert may_read_audit(mona)
    assert may_read_audit(ada)
    assert not may_read_audit(cora)
    assert not may_read_audit(ivan)


def test_a_study_scope_is_covered_by_one_grant_the_same_way_everywhere() -> None:
    """Grant.covers_scope is the one rule behind the subject pages, the Study page's
    scopes, the follow-up forms and the exports; None asks for every site."""
    from cryod.hub.followup import may_read, may_record
    from cryod.hub.web.study_view import covers

    cora = Grant(Role.COORDINATOR, "S1", "leeds")
    assert cora.covers_scope("S1", "leeds")
    assert not cora.covers_scope("S1", None)  # the whole study is more than leeds
    assert not cora.covers_scope("S2", "leeds")
    assert not cora.covers_scope(None, "leeds")
    assert Grant(Role.MONITOR).covers_scope(None, None)
    assert Grant(Role.MONITOR, "S1").covers_scope("S1", None)
    two = (cora, Grant(Role.MONITOR, "S2"))  # no single grant covers S1 everywhere
    assert not covers(two, "S1", None)
    assert not may_read(two, "S1", None)
    assert covers(two, "S1", "leeds")
    assert may_read(two, "S1", "leeds")
    assert may_record(two, "S1", "leeds")
    assert may_read_subject(two, "S1", "leeds")
    assert not may_read_subject(two, "S1", "york")


# ---- board --------------------------------------------------------------------------------
def telemetry(tip: float | None, supply: float = 5200.0) -> dict[str, object]:
    return {
        "ts_ms": 1,
        "supply_kpa": supply,
        "supply_validity": "valid",
        "probes": [
            {"probe": 1, "tip_c": tip, "tip_validity": "valid" if tip is not None else "stale"}
        ],
        "link": {"connected": True, "timeouts": 2, "retries": 1, "reconnects": 0},
    }


def test_a_room_silent_for_three_seconds_is_offline_with_its_last_values() -> None:
    b = Board()
    assert b.apply("cryod/v1/leeds/c1/telemetry", telemetry(-20.0), now_mono=10.0, now_wall=WALL)
    assert b.apply("cryod/v1/leeds/c1/telemetry", telemetry(-35.5), now_mono=10.5, now_wall=WALL)
    (r,) = b.view(10.5 + OFFLINE_AFTER_S)
    assert r["online"]
    assert r["probes"][0]["tip_c"] == -35.5
    assert r["probes"][0]["trend"] == [-20.0, -35.5]
    (r,) = b.view(10.5 + OFFLINE_AFTER_S + 0.01)
    assert not r["online"]
    assert r["offline_since"] == "14:07"
    assert r["probes"][0]["tip_c"] == -35.5  # kept, shown greyed
    assert r["supply_kpa"] == 5200.0


def test_retained_messages_fill_in_values_but_are_no_sign_of_life() -> None:
    b = Board()
    b.apply(
        "cryod/v1/leeds/c1/last_seen",
        {"ts_ms": int(dt.datetime(2026, 3, 1, 9, 5, tzinfo=dt.UTC).timestamp() * 1000)},
        now_mono=1.0,
        now_wall=WALL,
        retained=True,
    )
    b.apply(
        "cryod/v1/leeds/c1/state",
        {"engine_state": "idle", "phase": None, "remaining_s": None},
        now_mono=1.0,
        now_wall=WALL,
        retained=True,
    )
    (r,) = b.view(1.0)
    assert not r["online"]
    assert r["offline_since"] == "09:05"
    assert r["engine_state"] == "idle"


def test_state_counts_down_while_running_and_alarms_sort_by_priority() -> None:
    b = Board()
    b.apply(
        "cryod/v1/leeds/c1/state",
        {"engine_state": "running", "phase": "freeze", "probe": 1, "cycle": 2, "remaining_s": 90.0},
        now_mono=0.0,
        now_wall=WALL,
    )
    b.apply(
        "cryod/v1/leeds/c1/alarms/active",
        {
            "alarms": [
                {"priority": "low", "code": "A", "message": "a"},
                {"priority": "high", "code": "B", "message": "b", "probe": 2},
                {"priority": "bogus", "code": "C"},
            ]
        },
        now_mono=1.0,
        now_wall=WALL,
    )
    b.apply("cryod/v1/leeds/c1/telemetry", telemetry(-50.0), now_mono=2.0, now_wall=WALL)
    (r,) = b.view(2.5)
    assert r["countdown_s"] == 87.5
    assert r["step"] == "cycle 2, probe 1"
    assert [a["priority"] for a in r["alarms"]] == ["high", "low", "info"]


def test_untrusted_payload_values_of_the_wrong_type_are_ignored() -> None:
    b = Board()
    hostile = {
        "supply_kpa": "5200",
        "probes": [{"probe": "1", "tip_c": 3}, {"probe": 2, "tip_c": float("nan")}, "x"],
        "link": {"connected": "yes", "timeouts": True},
    }
    assert b.apply("cryod/v1/s/c/telemetry", hostile, now_mono=0.0, now_wall=WALL)
    (r,) = b.view(0.0)
    assert r["supply_kpa"] is None
    assert r["probes"] == [
        {
            "probe": 2,
            "tip_c": None,
            "tip_validity": None,
            "freeze_open": None,
            "thaw_on": None,
            "trend": [None],
        }
    ]
    assert r["link"]["connected"] is None
    assert r["link"]["timeouts"] is None
    assert not b.apply(
        "cryod/v1/s/c/telemetry", ["not", "an", "object"], now_mono=0.0, now_wall=WALL
    )
    assert not b.apply("elsewhere/v1/s/c/telemetry", {}, now_mono=0.0, now_wall=WALL)
    assert not b.apply("cryod/v1/s/c/audit/head", {}, now_mono=0.0, now_wall=WALL)
    assert parse_topic("cryod/v1/s//telemetry") is None


def test_the_board_shows_only_the_viewers_sites() -> None:
    b = Board()
    b.apply("cryod/v1/leeds/c1/telemetry", telemetry(1.0), now_mono=0.0, now_wall=WALL)
    b.apply("cryod/v1/york/c1/telemetry", telemetry(2.0), now_mono=0.0, now_wall=WALL)
    assert [r["key"] for r in b.view(0.0, sites={"leeds"})] == ["leeds/c1"]
    assert [r["key"] for r in b.view(0.0)] == ["leeds/c1", "york/c1"]


# ---- plot ---------------------------------------------------------------------------------
def test_decimation_keeps_each_columns_extremes_and_leaves_gaps() -> None:
    points: list[tuple[float, float | None]] = [(i / 100.0, float(i % 7)) for i in range(10_000)]
    points[5000] = (50.0, -99.0)  # one spike
    points += [(99.5, None)]
    cols = decimate(points, 0.0, 100.0, 100)
    assert len(cols) == 100
    spike = next(c for c in cols if c.index == 50)
    assert spike.lo == -99.0
    assert spike.hi == 6.0
    gaps = decimate([(0.0, 1.0), (4.0, None), (4.5, 2.0)], 0.0, 10.0, 10)
    assert [(c.index, c.gap_before) for c in gaps] == [(0, False), (4, True)]
    bridged = decimate([(0.0, 1.0), (4.0, 2.0)], 0.0, 10.0, 10)
    assert [(c.index, c.gap_before) for c in bridged] == [(0, False), (4, False)]
    silent = decimate([(0.0, 1.0), (9.0, 2.0)], 0.0, 10.0, 10, silence_s=5.0)
    assert [(c.index, c.gap_before) for c in silent] == [(0, False), (9, True)]
    assert decimate([(0.0, 1.0)], 5.0, 5.0, 10) == []


def test_the_plot_is_svg_with_shading_guides_and_one_path_segment_per_column() -> None:
    cols = decimate([(float(t), -float(t)) for t in range(100)], 0.0, 100.0, 50)
    svg = plot_svg(
        {1: cols},
        [Shade(1, 10.0, 60.0, "freeze"), Shade(1, 60.0, 80.0, "thaw")],
        duration_s=100.0,
        columns=50,
        title='<room> "x"',
    )
    assert svg.startswith("<svg")
    assert "&lt;room&gt;" in svg
    assert "<room>" not in svg
    assert "-20 °C" in svg
    assert "-40 °C" in svg
    assert svg.count("#cfe3ff") == 1
    assert svg.count("#ffe1c4") == 1
    path = re.search(r'<path d="([^"]+)"', svg)
    assert path is not None
    assert path.group(1).count("M") == 1  # one unbroken line
    assert path.group(1).count("L") == 2 * 50 - 1
    assert "<script" not in svg
    assert "style=" not in svg
    assert "no samples received" in plot_svg({}, [], duration_s=0.0, columns=10)
