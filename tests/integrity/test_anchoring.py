"""Anchoring: the cadence, the anchor file, the start-up comparison that tells a
restore from a mismatch, the failure condition and where the anchors are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cryod.daemon.anchoring import (
    AnchorFile,
    Anchoring,
    Cadence,
    anchor_line,
    placement_warnings,
    start_check,
)
from cryod.integrity import Head, parse_heads


def h(seq: int, tag: str = "a") -> Head:
    return Head(seq, (tag * 64)[:64])


def test_cadence_at_most_once_per_interval_events_at_once() -> None:
    c = Cadence(1.0)
    assert c.due_in(0.0) is None
    c.offer(h(1), urgent=False)
    assert c.due_in(0.0) == 0.0  # the first one: nothing sent yet
    assert c.take(0.0) == h(1)
    c.offer(h(2), urgent=False)
    c.offer(h(3), urgent=False)
    assert c.due_in(0.4) == pytest.approx(0.6)  # coalesced, sent one interval later
    c.offer(h(4), urgent=True)  # a cycle closed: now
    assert c.due_in(0.4) == 0.0
    assert c.take(0.4) == h(4)
    assert c.due_in(0.5) is None


def test_anchor_file_appends_and_reads_back_newest_first(tmp_path: Path) -> None:
    f = AnchorFile(tmp_path / "anchors.jsonl")
    import datetime as dt

    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    for s in range(1, 301):
        f.append(anchor_line("n", h(s), now))
    f.append(anchor_line("other", h(5000), now))
    got = [a.seq for a in f.newest_first("n", block=512)]
    assert got == list(range(300, 0, -1))
    assert [a.seq for a in parse_heads(f.path.read_text().splitlines(), "n")][-1] == 300
    assert list(AnchorFile(tmp_path / "none").newest_first("n")) == []


def _file(tmp_path: Path, *heads: Head) -> AnchorFile:
    import datetime as dt

    f = AnchorFile(tmp_path / "a.jsonl")
    for x in heads:
        f.append(anchor_line("n", x, dt.datetime(2026, 3, 1, tzinfo=dt.UTC)))
    return f


@pytest.mark.parametrize(
    ("db", "anchored", "state"),
    [
        ({1: "a", 2: "a", 3: "a"}, [h(2), h(3)], "consistent"),
        ({1: "a", 2: "a", 3: "a", 4: "a"}, [h(2), h(3)], "unanchored"),
        ({1: "a", 2: "a"}, [h(1), h(2), h(3), h(4)], "restore"),
        ({1: "a", 2: "b", 3: "b"}, [h(1), h(3)], "mismatch"),
        ({1: "a"}, [], "none"),
    ],
)
def test_start_check(tmp_path: Path, db: dict[int, str], anchored: list[Head], state: str) -> None:
    f = _file(tmp_path, *anchored)
    top = max(db)
    found = start_check(f, "n", h(top, db[top]), lambda s: h(s, db[s]).hash if s in db else None)
    assert found.state == state, found.detail
    if state == "restore":
        assert (found.agreed, found.newest) == (h(2), h(4))


class FakePublisher:
    def __init__(self) -> None:
        self.offered: list[tuple[str, dict[str, Any]]] = []
        self.acked: int | None = None

    def offer_audit_head(self, topic: str, body: dict[str, Any]) -> None:
        self.offered.append((topic, body))

    def status(self) -> Any:
        return type("S", (), {"audit_head_seq": self.acked})()


async def test_a_route_failing_for_alarm_after_s_raises_the_condition_and_clears(
    tmp_path: Path,
) -> None:
    clock = [0.0]
    events: list[tuple[bool, str]] = []
    pub = FakePublisher()
    blocked = tmp_path / "not-a-dir" / "anchors.jsonl"
    a = Anchoring(
        node="n",
        alarm_after_s=30.0,
        anchor_file=blocked,
        on_condition=lambda present, detail: events.append((present, detail)),
        monotonic=lambda: clock[0],
    )
    a.attach_mqtt(pub, "cryod/v1/s/n/audit/head")
    a.offer(h(1), "alarm")
    await a.step()
    assert pub.offered[-1][1]["chain_seq"] == 1
    assert "personal" not in str(pub.offered)
    clock[0] = 29.0
    await a.step()
    assert events == []  # not yet: a broker reconnect or a share remount is not an alarm
    clock[0] = 31.0
    await a.step()
    assert events
    assert events[-1][0] is True
    assert "file" in events[-1][1]
    assert "mqtt" in events[-1][1]
    blocked.parent.mkdir()
    pub.acked = 1
    clock[0] = 32.0
    await a.step()  # the file route retries the head it could not write
    assert events[-1] == (False, "")
    assert [x.seq for x in parse_heads(blocked.read_text().splitlines(), "n")] == [1]


MOUNTS = """\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 8:2 / /var/lib/cryod rw - ext4 /dev/sda2 rw
31 22 0:40 / /mnt/anchors rw - nfs4 srv:/anchors rw
32 22 8:3 / /mnt/usb rw - vfat /dev/sdb1 rw
"""


def test_placement_warnings() -> None:
    db = Path("/var/lib/cryod/cryod.db")
    only_here = placement_warnings(db, None, None, mountinfo=MOUNTS)
    assert len(only_here) == 1
    assert "every anchor" in only_here[0]
    same_fs = placement_warnings(db, Path("/var/lib/cryod/a.jsonl"), None, mountinfo=MOUNTS)
    assert any("own filesystem" in w for w in same_fs)
    assert any("every anchor" in w for w in same_fs)
    assert placement_warnings(db, Path("/mnt/anchors/n.jsonl"), None, mountinfo=MOUNTS) == []
    local = placement_warnings(db, Path("/mnt/usb/n.jsonl"), "127.0.0.1", mountinfo=MOUNTS)
    assert len(local) == 1
    assert "every anchor" in local[0]
    assert placement_warnings(db, None, "broker.hospital.example", mountinfo=MOUNTS) == []


async def test_the_anchoring_task_stops_when_cancelled_even_while_heads_arrive() -> None:
    """The daemon's stop cancels it; a cancel landing as a head arrives must not be
    swallowed (asyncio.wait_for on 3.11 could: the task outlived the stop, cryod was
    killed after its stop timeout)."""
    import asyncio

    a = Anchoring(node="n", interval_s=1.0)
    for round_ in range(20):
        task = asyncio.create_task(a.run())
        await asyncio.sleep(0)
        a.offer(h(round_ * 2 + 1), "samples")
        task.cancel()
        a.offer(h(round_ * 2 + 2), "alarm")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)
