"""The board live: a room publishes through a real mosquitto, the app (under
uvicorn) subscribes, the server-sent events carry the tip falling, then the room
offline 3 s after it stops. The web app never publishes a message."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine

from cryod.hub.subscriber import BrokerSettings
from cryod.hub.web.app import WebSettings, create_app
from cryod.hub.web.board import OFFLINE_AFTER_S
from tests.hub.conftest import NODE
from tests.mqtt.broker import Mosquitto, running_broker

from .live import RoomPublisher, serving
from .study import PASSWORD, Room


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def live_settings(engine: Engine, tmp_path: Path, broker: Mosquitto) -> WebSettings:
    return WebSettings(
        engine=engine,
        node=NODE,
        anchor_file=tmp_path / "anchors.jsonl",
        journal_socket=None,
        broker=BrokerSettings(
            host="127.0.0.1", port=broker.port, client_id="cryohub-web", session_expiry_s=0
        ),
    )


def logged_in(base: str, user: str) -> httpx2.Client:
    c = httpx2.Client(base_url=base, timeout=30.0)
    page = c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    r = c.post(
        "/login",
        data={"csrf": token.group(1), "username": user, "password": PASSWORD, "next": "/board"},
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/board"
    return c


def wait_for_event(
    lines: Iterator[str], predicate: Callable[[dict[str, Any]], bool], deadline_s: float = 30.0
) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    for line in lines:
        if line.startswith("data: "):
            doc = json.loads(line[6:])
            if predicate(doc):
                return doc
        assert time.monotonic() < end, "the board never showed it"
    raise AssertionError("the stream ended")


def room(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((r for r in doc["rooms"] if r["key"] == key), None)


def test_the_board_streams_a_falling_tip_then_offline_and_never_publishes(
    study_engine: tuple[Engine, dict[str, Room]], tmp_path: Path, broker: Mosquitto
) -> None:
    settings = live_settings(study_engine[0], tmp_path, broker)
    leeds = RoomPublisher(broker.port, "leeds", "c1")
    york = RoomPublisher(broker.port, "york", "c1")
    try:
        with (
            serving(create_app(settings)) as base,
            contextlib.closing(logged_in(base, "cora")) as c,
            c.stream("GET", "/board/events") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            wait_for_event(lines, lambda d: d["feed"] is True)
            leeds.state("freeze", 90.0)
            york.telemetry({1: 5.0})
            seen = []
            for tip in (10.0, -15.5, -42.0, -88.25):
                sent = time.monotonic()  # the board hears the message no earlier
                leeds.telemetry({1: tip, 2: None})

                def shows(d: dict[str, Any], tip: float = tip) -> bool:
                    r = room(d, "leeds/c1")
                    return r is not None and r["probes"][0]["tip_c"] == tip

                doc = wait_for_event(lines, shows)
                seen.append(room(doc, "leeds/c1"))
            last = seen[-1]
            assert last is not None
            assert last["online"]
            assert last["phase"] == "freeze"
            assert last["probes"][0]["trend"] == [10.0, -15.5, -42.0, -88.25]
            assert last["probes"][1]["tip_c"] is None  # stale: no number
            assert last["probes"][1]["tip_validity"] == "stale"
            assert room(doc, "york/c1") is None  # cora is staff of leeds only
            doc = wait_for_event(lines, lambda d: not room(d, "leeds/c1")["online"])  # type: ignore[index]
            # offline no sooner than OFFLINE_AFTER_S after the last message was sent (a
            # bound from before the send: however late the board showed that message)
            assert time.monotonic() - sent >= OFFLINE_AFTER_S
            gone = room(doc, "leeds/c1")
            assert gone is not None
            assert re.fullmatch(r"\d\d:\d\d", gone["offline_since"])
            assert gone["probes"][0]["tip_c"] == -88.25  # last values kept
    finally:
        leeds.close()
        york.close()
    log = broker.log()
    assert "cryohub-web" in log  # it did connect
    assert not re.search(r"Received PUBLISH from cryohub-web", log)
