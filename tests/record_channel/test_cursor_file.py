"""The delivered-up-to cursor on disk: atomic, private, and not trusted when wrong."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cryod.daemon.record_channel.cursor_file import (
    CursorFileError,
    SavedCursor,
    load_cursor,
    save_cursor,
)

SAVED = SavedCursor(
    node="ws-1", delivered_seq=42, delivered_hash="ab" * 32, at="2026-03-01T09:15:02.000000Z"
)


def test_saved_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "c"
    assert load_cursor(path, "ws-1") is None
    save_cursor(path, SAVED)
    assert load_cursor(path, "ws-1") == SAVED
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "c.tmp").exists()
    save_cursor(path, SavedCursor("ws-1", 43, None, SAVED.at))
    loaded = load_cursor(path, "ws-1")
    assert loaded is not None
    assert loaded.delivered_seq == 43


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not a cryod.record-cursor/1 file"),
        ('{"cursor": "other/1"}', "not a cryod.record-cursor/1 file"),
        ('{"cursor": "cryod.record-cursor/1", "node": "ws-1"}', "delivered_seq"),
        ('{"cursor": "cryod.record-cursor/1", "node": "ws-2", "delivered_seq": 1,'
         ' "delivered_hash": null, "at": "x"}', "names node 'ws-2'"),
        ('{"cursor": "cryod.record-cursor/1", "node": "ws-1", "delivered_seq": -1,'
         ' "delivered_hash": null, "at": "x"}', "negative"),
    ],
)  # fmt: skip
def test_a_file_that_cannot_be_trusted_is_an_error_saying_why(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "c"
    path.write_text(text)
    with pytest.raises(CursorFileError, match=match):
        load_cursor(path, "ws-1")
