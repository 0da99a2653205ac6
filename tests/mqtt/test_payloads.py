"""Payload builders, the personal-data guard and the [mqtt] config: no broker needed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jsonschema
import pytest

from cryod.daemon.telemetry.config import MqttConfigError, load_mqtt_config
from cryod.daemon.telemetry.payloads import (
    SCHEMA,
    ActiveAlarm,
    PersonalDataError,
    Topics,
    alarm_event_body,
    alarms_active_body,
    assert_no_personal_data,
    audit_head_body,
    audit_head_topic,
    cycle_body,
    encode,
    last_seen_body,
    stamp,
    state_body,
    status_body,
    telemetry_body,
    time_below,
)
from tests.mqtt import asyncapi
from tests.mqtt.samples import T_UTC, link, snapshot

TOPICS = Topics("demo", "c1")


def _stamped(body: dict, seq: int = 1) -> dict:
    return json.loads(encode(stamp(body, session=3, seq=seq)))


def test_telemetry_body_keeps_validity_and_nulls_unusable_values() -> None:
    msg = _stamped(telemetry_body(snapshot(), link=link()))
    assert msg["schema"] == SCHEMA
    assert msg["session"] == 3
    assert msg["seq"] == 1
    assert msg["ts_ms"] == round((T_UTC + 1) * 1000)
    p1, p2 = msg["probes"]
    assert p1["tip_c"] == -85.25
    assert p1["tip_validity"] == "valid"
    assert p1["freeze_open"] is True
    # stale or invalid data is never a number
    assert p2["tip_c"] is None
    assert p2["tip_validity"] == "invalid"
    assert p2["return_kpa"] is None
    assert p2["return_validity"] == "stale"
    assert p2["trip"] == "min_tip"
    assert p2["tc_status"] == "open"
    assert msg["cylinder_validity"] == "questionable"
    assert msg["cylinder_kpa"] == 31000.0
    assert msg["link"]["timeouts"] == 1
    asyncapi.validate(TOPICS.telemetry, msg)


def test_non_finite_numbers_become_null_not_nan() -> None:
    msg = _stamped(telemetry_body(snapshot(tip_c=math.inf)))
    assert msg["probes"][0]["tip_c"] is None


def test_every_builder_matches_its_schema_and_extra_keys_fail() -> None:
    bodies = {
        TOPICS.status: status_body(
            online=True, software_version="0.1.0", client_id="x", t_utc_s=T_UTC, reason="connected"
        ),
        TOPICS.telemetry: telemetry_body(snapshot()),
        audit_head_topic("demo", "ws-1"): audit_head_body(
            t_utc_s=T_UTC, node="ws-1", seq=42, digest="ab" * 32
        ),
        TOPICS.last_seen: last_seen_body(t_utc_s=T_UTC, interval_s=10.0),
        TOPICS.state: state_body(
            t_utc_s=T_UTC,
            engine_state="running",
            phase="freeze",
            probe=1,
            cycle=1,
            remaining_s=42.04,
            procedure_id=17,
            protocol="morton-150",
        ),
        TOPICS.alarms: {
            **alarm_event_body(
                t_utc_s=T_UTC,
                event="raised",
                alarm_id=4,
                code="TIP_STALE",
                priority="high",
                probe=1,
            ),
            "event_id": 9,
        },
        TOPICS.alarms_active: alarms_active_body(
            t_utc_s=T_UTC,
            alarms=[
                ActiveAlarm(4, "SUPPLY_LOW", "low", None, 1, False, False),
                ActiveAlarm(5, "TIP_STALE", "high", 1, 2, False, True),
            ],
        ),
        TOPICS.cycles: {
            **cycle_body(
                t_utc_s=T_UTC,
                cycle_id=2,
                procedure_id=17,
                probe=1,
                cycle=1,
                phase="thaw",
                started_ts_ms=1,
                freeze_s=150.0,
                thaw_s=30.0,
                min_tip_c=-88.1,
                time_below_m20c_s=140.0,
                time_below_m40c_s=120.5,
                outcome="completed",
            ),
            "event_id": 10,
        },
    }
    seen = set()
    for topic, body in bodies.items():
        msg = _stamped(body)
        seen.add(asyncapi.validate(topic, msg))
        # the schemas are closed: an undocumented field is an error, so the check can fail
        with pytest.raises(jsonschema.ValidationError):
            asyncapi.validate(topic, {**msg, "undocumented": 1})
    # every telemetry channel (the record channel's messages: tests/record_channel)
    assert seen == {ch for ch, _, _ in asyncapi.channels()} - {"recordChain"}
    active = _stamped(bodies[TOPICS.alarms_active])
    assert [a["priority"] for a in active["alarms"]] == ["high", "low"]


def test_time_below_integrates_step_held_samples() -> None:
    samples = [(0.0, 10.0), (1.0, -25.0), (3.0, -45.0), (4.0, None), (6.0, -50.0), (7.0, 0.0)]
    assert time_below(samples, -20.0) == pytest.approx(2.0 + 1.0 + 1.0)
    assert time_below(samples, -40.0) == pytest.approx(1.0 + 1.0)


@pytest.mark.parametrize(
    "key",
    ["patient", "patient_ref", "PatientRef", "patientName", "name", "first_name", "surname",
     "date_of_birth", "dob", "nhs_number", "mrn", "email", "Phone", "home_address"],
)  # fmt: skip
def test_guard_rejects_personal_data_keys_at_any_depth(key: str) -> None:
    with pytest.raises(PersonalDataError):
        assert_no_personal_data({key: "x"})
    with pytest.raises(PersonalDataError, match=key):
        encode({"ts_ms": 1, "probes": [{"probe": 1, "extra": {key: "x"}}]})


def test_guard_passes_every_real_payload_key() -> None:
    body = telemetry_body(snapshot(), link=link())
    encode(stamp(body, session=1, seq=1))  # would raise on any forbidden key
    for key in ("procedure_id", "engine_state", "software_version", "client_id", "code"):
        assert_no_personal_data({key: 1})


def test_stamp_needs_a_timestamp() -> None:
    with pytest.raises(ValueError, match="ts_ms"):
        stamp({"x": 1}, session=1, seq=1)


# ----- config -----


def _secret(tmp_path: Path, name: str, mode: int, text: str = "s3cret\n") -> Path:
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_config_defaults_and_topic_tree(tmp_path: Path) -> None:
    cfg = load_mqtt_config({"site": "demo", "console": "c1"})
    assert cfg.telemetry_hz == 2.0
    assert cfg.qos.alarms == 1
    assert cfg.qos.telemetry == 0
    assert cfg.effective_client_id == "cryod-demo-c1"
    assert Topics(cfg.site, cfg.console).alarms_active == "cryod/v1/demo/c1/alarms/active"


def test_config_refuses_world_readable_password_file_naming_it(tmp_path: Path) -> None:
    pw = _secret(tmp_path, "mqtt.pw", 0o644)
    with pytest.raises(MqttConfigError) as err:
        load_mqtt_config(
            {"site": "demo", "console": "c1", "username": "u", "password_file": str(pw)},
            source="/etc/cryod/cryod.toml",
        )
    text = str(err.value)
    assert "/etc/cryod/cryod.toml" in text
    assert "mqtt.password_file" in text
    assert str(pw) in text
    assert "0644" in text
    assert "chmod 600" in text
    os.chmod(pw, 0o600)
    cfg = load_mqtt_config(
        {"site": "demo", "console": "c1", "username": "u", "password_file": str(pw)}
    )
    assert cfg.read_password() == "s3cret"


def test_config_refuses_group_readable_client_key(tmp_path: Path) -> None:
    ca = _secret(tmp_path, "ca.crt", 0o644, "x")
    crt = _secret(tmp_path, "c.crt", 0o644, "x")
    key = _secret(tmp_path, "c.key", 0o640, "x")
    tls = {"ca_file": str(ca), "cert_file": str(crt), "key_file": str(key)}
    with pytest.raises(MqttConfigError, match=r"c\.key.*0640"):
        load_mqtt_config({"site": "demo", "console": "c1", "tls": tls})
    os.chmod(key, 0o600)
    assert load_mqtt_config({"site": "demo", "console": "c1", "tls": tls}).tls is not None


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"site": "demo", "console": "c1", "colour": "red"}, "mqtt.colour"),
        ({"site": "demo", "console": "c1", "qos": {"alarms": 0}}, "mqtt.qos.alarms"),
        ({"site": "de/mo", "console": "c1"}, "mqtt.site"),
        ({"site": "demo", "console": "#"}, "mqtt.console"),
        ({"site": "demo", "console": "c1", "telemetry_hz": 0}, "mqtt.telemetry_hz"),
        ({"site": "demo", "console": "c1", "port": 70000}, "mqtt.port"),
        ({"console": "c1"}, "mqtt.site"),
        ({"site": "demo", "console": "c1", "password_file": "/x"}, "mqtt.password_file"),
        ({"site": "demo", "console": "c1", "tls": {"ca_file": "/nonexistent"}}, "ca_file"),
    ],
)
def test_config_errors_name_source_and_key(section: dict, needle: str) -> None:
    with pytest.raises(MqttConfigError) as err:
        load_mqtt_config(section, source="site.toml")
    assert "site.toml" in str(err.value)
    assert needle in str(err.value)


def test_config_password_file_needs_username(tmp_path: Path) -> None:
    pw = _secret(tmp_path, "mqtt.pw", 0o600)
    with pytest.raises(MqttConfigError, match="password_file needs username"):
        load_mqtt_config({"site": "demo", "console": "c1", "password_file": str(pw)})


def test_config_for_console_validates_the_console_id() -> None:
    cfg = load_mqtt_config({"site": "demo"})  # a daemon with several consoles
    assert cfg.console is None
    one = cfg.for_console("c2")
    assert one.console == "c2"
    assert one.effective_client_id == "cryod-demo-c2"
    with pytest.raises(ValueError, match="console"):
        cfg.for_console("c2/#")
