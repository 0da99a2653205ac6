"""cryod.common: the one formatter of refused documents and the one JSON-lines exchange."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cryod.common.jsonlines import encode_line, exchange, exchange_blocking
from cryod.common.validation import field_problems, problem_lines


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["freeze"] = "freeze"
    duration_s: float = Field(gt=0)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    mode: Literal["a", "b"] = "a"
    steps: list[_Step] = []


def _refused(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Doc.model_validate(data)
    return info.value


def test_file_key_and_reason_one_line_each() -> None:
    exc = _refused({"colour": "red", "steps": [{"duration_s": 0}], "mode": "c"})
    assert sorted(problem_lines(exc, "x.toml")) == [
        "x.toml: colour: unknown key",
        "x.toml: mode: unknown code 'c' (allowed: 'a' or 'b')",
        "x.toml: name: required",
        "x.toml: steps.0.duration_s: input should be greater than 0 (got 0)",
    ]
    # without a file: under a prefix (a driver's options inside a config)
    assert problem_lines(_refused({}), None, prefix="cryod.toml:driver") == [
        "cryod.toml:driver.name: required"
    ]


def test_a_union_tag_after_an_index_is_dropped() -> None:
    exc = _refused({"name": "n", "steps": [{"duration_s": -1}]})
    assert [p.key for p in field_problems(exc)] == ["steps.0.duration_s"]
    # a pydantic location with the tag inserted, as a discriminated union makes it
    err = exc.errors()[0]
    tagged = ValidationError.from_exception_data(
        "x",
        [
            {
                "type": err["type"],
                "loc": ("steps", 0, "freeze", "duration_s"),
                "input": -1,
                "ctx": err["ctx"],
            }
        ],
    )
    assert [p.key for p in field_problems(tagged, union_tags=("freeze",))] == ["steps.0.duration_s"]
    assert [p.key for p in field_problems(tagged)] == ["steps.0.freeze.duration_s"]


def test_free_text_is_never_repeated() -> None:
    exc = _refused({"name": "n", "mode": "John Smith, 12 Acacia Avenue"})
    (line,) = problem_lines(exc, "f")
    assert "John" not in line
    assert line.startswith("f: mode: unknown code (allowed:")


async def test_one_request_and_its_answer(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        seen.append(line)
        if json.loads(line).get("cmd") != "hang-up":
            writer.write(encode_line({"ok": True}))
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path=str(sock))
    try:
        assert await exchange(sock, {"cmd": "status"}, limit=1024) == b'{"ok": true}\n'
        assert await exchange(sock, {"cmd": "hang-up"}, limit=1024) == b""
        answer = await asyncio.to_thread(exchange_blocking, sock, {"cmd": "x"}, timeout_s=10)
        assert json.loads(answer) == {"ok": True}
    finally:
        server.close()
        await server.wait_closed()
    assert seen[0] == b'{"cmd": "status"}\n'


async def test_no_socket_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await exchange(tmp_path / "none.sock", {"cmd": "status"}, limit=1024)
