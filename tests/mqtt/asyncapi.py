"""docs/asyncapi.yaml as validators: the document is the contract the tests hold messages to."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
_URI = "urn:cryod:asyncapi"


@cache
def document() -> dict[str, Any]:
    return yaml.safe_load(DOC_PATH.read_text())


@cache
def _registry() -> Registry:
    return Registry().with_resource(
        _URI, Resource.from_contents(document(), default_specification=DRAFT7)
    )


def _resolve(ref: str) -> dict[str, Any]:
    node: Any = document()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def validator_for_schema(name: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(
        {"$ref": f"{_URI}#/components/schemas/{name}"}, registry=_registry()
    )


@cache
def channels() -> list[tuple[str, re.Pattern[str], jsonschema.Draft7Validator]]:
    """(channel name, address regex, payload validator) for every channel."""
    out = []
    for name, ch in document()["channels"].items():
        pattern = (
            re.escape(ch["address"])
            .replace(r"\{site\}", "[^/]+")
            .replace(r"\{console\}", "[^/]+")
            .replace(r"\{node\}", "[^/]+")
        )
        (msg_ref,) = [m["$ref"] for m in ch["messages"].values()]
        payload_ref = _resolve(msg_ref)["payload"]["$ref"]
        validator = jsonschema.Draft7Validator({"$ref": _URI + payload_ref}, registry=_registry())
        out.append((name, re.compile(f"^{pattern}$"), validator))
    return out


def channel_for(topic: str) -> tuple[str, jsonschema.Draft7Validator]:
    hits = [(n, v) for n, rx, v in channels() if rx.match(topic)]
    if len(hits) != 1:
        raise AssertionError(f"topic {topic!r} matches {len(hits)} channels of the AsyncAPI doc")
    return hits[0]


def validate(topic: str, payload: dict[str, Any]) -> str:
    """Validate a real message; returns the channel name. Raises ValidationError."""
    name, validator = channel_for(topic)
    validator.validate(payload)
    return name
