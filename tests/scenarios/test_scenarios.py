"""Scenario tests: every simulator fault kind and every supervisor limit, provoked
against a real cryosim over a real transport and a real ``cryod run``, every
safety check on (default site limits). One TOML file in data/ per scenario.

Each test asserts, from the simulator's event log, that the freeze valve
really closed (by the expected cause) and how long it took from the
injection, and, from the daemon, that the right alarms with the right
priorities were raised (status and the DB alarms table).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .runner import LinkTiming, Outcome, all_scenarios, load_scenario, measure_link, run_scenario

_TIMINGS: dict[str, LinkTiming] = {}
RESULTS: list[tuple[str, float | None, float | None, str]] = []


def _timing(transport: str, tmp_path_factory: pytest.TempPathFactory) -> LinkTiming:
    if transport not in _TIMINGS:
        t = measure_link(tmp_path_factory.mktemp(f"link-{transport}"), transport)
        _TIMINGS[transport] = t
        print(
            f"\n[{transport}] snapshot read p50 {t.read_p50_s * 1000:.1f} ms "
            f"p99 {t.read_p99_s * 1000:.1f} ms; write p50 {t.write_p50_s * 1000:.1f} ms "
            f"p99 {t.write_p99_s * 1000:.1f} ms; console tick {t.tick_s * 1000:.0f} ms"
        )
    return _TIMINGS[transport]


def check(out: Outcome) -> None:
    sc, ex = out.scenario, out.scenario.expect
    ctx = f"{sc.name}: notes={out.notes} engine={out.status['engine']} raised={sorted(out.raised)}"
    for code in ex.alarms:
        assert code in out.raised, f"alarm {code} not raised; {ctx}"
    if ex.alarms_any:
        assert set(ex.alarms_any) & out.raised, f"none of {ex.alarms_any} raised; {ctx}"
    # every alarm in status is in the DB alarms table with the same priority
    db = {f"{c}:{p}" for c, p, _ in out.db_alarms}
    for a in out.status["alarms"]:
        assert f"{a['code']}:{a['priority']}" in db, f"{a['code']} not in the DB; {ctx}"
    if ex.engine_state is not None:
        assert out.status["engine"]["state"] == ex.engine_state, ctx
    for call, got, want in out.call_errors:
        assert got == want, f"{call}: refused with {got}, expected {want}; {ctx}"
    freeze = [e for e in out.events if e["event"] == "valve" and e.get("valve") == "freeze"]
    if ex.limits_on_time_s is not None:
        armed = [e["max_on_time_s"] for e in out.events if e["event"] == "limits" and e["armed"]]
        assert armed == ex.limits_on_time_s, f"console limits armed {armed}; {ctx}"
    if ex.freeze_opens is not None:
        opens = [e for e in freeze if e["commanded"] and e["probe"] == out.probe]
        assert len(opens) == ex.freeze_opens, f"freeze valve opened {len(opens)} times; {ctx}"
    if ex.close_cause:
        closes = [e for e in freeze if not e["commanded"]]
        assert closes, f"the freeze valve was never closed at the console; {ctx}"
        assert out.close_event is not None or ex.reaction is None, ctx
        first = out.close_event or closes[0]
        assert first["cause"] in ex.close_cause, f"closed by {first['cause']}; {ctx}"
    # nothing is left open at the console at the end
    last: dict[int, dict[str, object]] = {}
    for e in freeze:
        last[e["probe"]] = e
    assert not any(e["commanded"] for e in last.values()), ctx
    if ex.master_closed:
        masters = [e for e in out.events if e["event"] == "valve" and e.get("valve") == "master"]
        assert masters, f"master valve never moved; {ctx}"
        assert not masters[-1]["open"], f"master valve left open; {ctx}"
    if ex.reaction is not None:
        assert out.reaction_s is not None, f"no reaction measured; {ctx}"
        assert out.bound_s is not None
        assert out.reaction_s <= out.bound_s, (
            f"reaction {out.reaction_s * 1000:.0f} ms > bound {out.bound_s * 1000:.0f} ms "
            f"(of which {out.lag_s * 1000:.0f} ms measured machine lag); {ctx}"
        )
    if sc.recover is not None:
        assert out.recovered_state == sc.recover.state, ctx
        assert out.recovered_alarms == [], f"alarms left after recovery: {out.recovered_alarms}"


def _params() -> list[object]:
    out: list[object] = []
    for path in all_scenarios():
        bug = load_scenario(path).known_bug
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
        out.append(pytest.param(path, id=path.stem, marks=marks))
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", _params())
def test_scenario(path: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    sc = load_scenario(path)
    timing = _timing(sc.transport, tmp_path_factory)
    out = run_scenario(sc, tmp_path, timing)
    rx = "-" if out.reaction_s is None else f"{out.reaction_s * 1000:.0f} ms"
    bound = "-" if out.bound_s is None else f"{out.bound_s * 1000:.0f} ms"
    cause = None if out.close_event is None else out.close_event["cause"]
    print(f"\n{sc.name}: reaction {rx} (bound {bound}), cause {cause}, notes {out.notes}")
    print(f"  raised {sorted(out.raised)} engine {out.status['engine']}")
    check(out)
