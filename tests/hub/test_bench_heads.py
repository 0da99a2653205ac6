"""Smoke test of ``python -m tests.hub.bench_heads`` (the head-query benchmark, docs/collector.md).

Three rooms of 300 entries on a throwaway PostgreSQL: the last line is the
JSON result, every run read back the heads that were written, and the head
query ``received.room_views`` sends is served by the primary key
``(node, seq)``: an index-only backward scan, one probe per room (it fails if
the query stops using the index). Bad options: one line, exit 2, no cluster.
"""

from __future__ import annotations

import json

import pytest

from tests.hub import bench_heads
from tests.pg import require_postgres

ROOMS = 3
PER_ROOM = 300


def test_the_bench_measures_room_views_and_its_plan_probes_the_primary_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_postgres()
    args = ["--rooms", str(ROOMS), "--entries", str(ROOMS * PER_ROOM), "--runs", "3"]
    assert bench_heads.main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert result["bench"] == "heads"
    assert (result["rooms"], result["entries"]) == (ROOMS, ROOMS * PER_ROOM)
    assert result["entries_per_room"] == [PER_ROOM, PER_ROOM]
    assert result["heads_correct"] is True
    for timed in (result["room_views"], result["group_by_max"]):
        assert len(timed["runs_ms"]) == 3
        assert all(ms > 0 for ms in timed["runs_ms"])
        assert min(timed["runs_ms"]) <= timed["median_ms"] <= max(timed["runs_ms"])
        assert timed["first_ms"] > 0

    plan = result["head_query_plan"]
    assert plan["execution_ms"] > 0
    scans = plan["received_entries_scans"]
    assert scans, "the head query reads received_entries"
    for scan in scans:
        assert scan["index"] == bench_heads.PK, scan
        assert scan["direction"] == "Backward", scan
        assert scan["loops"] == ROOMS, scan  # one probe per room ...
        assert scan["rows"] == 1, scan  # ... reading one entry, not the chain
    assert any(s["node_type"] == "Index Only Scan" for s in scans), scans
    assert result["head_query_uses_only_pk"] is True
    assert result["index_only_backward_scan"] is True


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--rooms", "0"], "--rooms"),
        (["--runs", "0"], "--runs"),
        (["--rooms", "5", "--entries", "4"], "--entries"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    assert bench_heads.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert named in err[0]
