"""``python -m tests.bench.compare`` end to end on a tiny run, with the slow disk.

No timing is asserted (the figures belong to the command, not the test suite):
this proves the A/B harness still runs both trees, one window each, and that
``--slow-disk-ms`` reaches both daemons (their writer's batches took at least
the fsync delay, which a real disk here does not: the bench's writer batches
take a few milliseconds).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import require_binary

from . import compare

FSYNC_MS = 100


@pytest.mark.slow
def test_compare_runs_both_trees_with_the_slow_disk(capsys: pytest.CaptureFixture[str]) -> None:
    require_binary("mosquitto")
    require_binary("cc")
    rc = compare.main(
        [
            "HEAD",
            "--rounds",
            "1",
            "--windows",
            "1",
            "--window-s",
            "1",
            "--slow-disk-ms",
            str(FSYNC_MS),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["slow_disk_ms"] == FSYNC_MS
    labels = sorted(summary["summary"])
    assert len(labels) == 2
    assert "this tree" in labels
    for label in labels:
        row = summary["summary"][label]
        assert row["windows"] == 1
        assert row["median_jitter_ms_p99"] > 0
        assert row["median_jitter_floor_ms_p99"] > 0
    batches = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^  (.+): writer mean batch ([0-9.]+) ms$", out, re.MULTILINE)
    }
    assert sorted(batches) == labels
    assert all(ms >= FSYNC_MS for ms in batches.values()), batches


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["HEAD", "--slow-disk-ms", "-5"], "--slow-disk-ms: must be 0 or more, got -5"),
        (["HEAD", "--slow-disk-ms", "2.5"], "not a whole number of milliseconds: '2.5'"),
        (["no-such-ref-xyz"], "ref: no commit 'no-such-ref-xyz'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any worktree or rig is made (a negative delay would make
    slowdisk.c's nanosleep retry forever and hang the daemon's writer)."""
    with pytest.raises(SystemExit) as exc:
        compare.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert reason in err
    assert "Traceback" not in err
