"""The record encoder lets exactly the pseudonymous reference through, nothing else;
telemetry's guard is unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from cryod.daemon.record_channel.message import RecordPrivacyError, RowOut, record_document
from cryod.daemon.telemetry.payloads import PersonalDataError, encode
from cryod.integrity import GENESIS_HASH, Entry, Kind, encode_row

from .room import PATIENT_REF, encoder

SALT = bytes(range(16))


def row(table: str, **columns: tuple[Kind, object]) -> RowOut:
    cols = {"id": (Kind.INT, 1), **columns}
    return RowOut(table=table, key={"id": 1}, canonical=encode_row(table, ["id"], cols), salt=SALT)


def message(
    rows: list[RowOut] | None = None, payload: dict[str, Any] | None = None, kind: str = "row"
) -> dict[str, Any]:
    entry = Entry(
        seq=1, at="2026-03-01T09:15:02.123456Z", kind=kind,
        payload=payload if payload is not None else {"table": "procedures", "key": {"id": 1}},
        prev_hash=GENESIS_HASH, hash="a" * 64, node="ws-1",
    )  # fmt: skip
    return record_document(
        site="s", node="ws-1", entry=entry, rows=rows or [], sent_at="2026-03-01T09:15:03.000000Z"
    )


def test_the_pseudonym_in_the_procedures_row_is_allowed() -> None:
    body = encoder().encode(message([row("procedures", patient_ref=(Kind.TEXT, PATIENT_REF))]))
    assert b'"canonical_b64"' in body


@pytest.mark.parametrize("value", ["John Smith", "943 476 5919", "MN-1990-04-12", "a@b.org"])
def test_a_patient_ref_that_is_not_a_pseudonym_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(RecordPrivacyError, match="not a pseudonym") as err:
        encoder().encode(message([row("procedures", patient_ref=(Kind.TEXT, value))]))
    assert value not in str(err.value)


def test_the_pseudonym_column_in_another_table_is_refused() -> None:
    with pytest.raises(RecordPrivacyError, match=r"cycles\.patient_ref"):
        encoder().encode(message([row("cycles", patient_ref=(Kind.TEXT, PATIENT_REF))]))


@pytest.mark.parametrize("column", ["patient_name", "dob", "nhs_number", "email", "surname"])
def test_any_other_personal_column_is_refused(column: str) -> None:
    with pytest.raises(RecordPrivacyError, match=column):
        encoder().encode(message([row("procedures", **{column: (Kind.TEXT, "x")})]))


def test_a_personal_key_inside_a_json_column_is_refused() -> None:
    nested = (Kind.JSON, [{"code": "x", "patientName": "Jo"}])
    with pytest.raises(RecordPrivacyError, match="patientName"):
        encoder().encode(message([row("procedures", adverse_events=nested)]))


def test_the_column_hint_is_allowed_only_in_a_procedures_row_entry() -> None:
    hints = {"columns": {"patient_ref": "0a1b2c3d", "id": "01234567"}}
    encoder().encode(message(payload={"table": "procedures", "key": {"id": 1}, **hints}))
    with pytest.raises(RecordPrivacyError, match="patient_ref"):
        encoder().encode(message(payload={"table": "cycles", "key": {"id": 1}, **hints}))
    with pytest.raises(RecordPrivacyError, match="patient_ref"):  # not a hint: a value
        encoder().encode(
            message(payload={"table": "procedures", "columns": {"patient_ref": PATIENT_REF}})
        )


def test_the_store_placeholder_is_allowed_and_a_real_reference_in_an_event_is_not() -> None:
    from cryod.daemon.store.records import REDACTED

    ok = {"action": "procedure_open", "args": {"patient_ref": REDACTED}}
    encoder().encode(message(payload=ok, kind="operator_action"))
    bad = {"action": "procedure_open", "args": {"patient_ref": PATIENT_REF}}
    with pytest.raises(RecordPrivacyError, match=r"args\.patient_ref"):
        encoder().encode(message(payload=bad, kind="operator_action"))
    with pytest.raises(RecordPrivacyError, match="subject"):
        encoder().encode(message(payload={"subject": "x"}, kind="procedure_opened"))


def test_telemetrys_guard_is_unchanged_it_refuses_the_pseudonym_key() -> None:
    with pytest.raises(PersonalDataError):
        encode({"patient_ref": PATIENT_REF})
    with pytest.raises(PersonalDataError):
        encode({"columns": {"patient_ref": "0a1b2c3d"}})


def test_nan_is_not_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        encoder().encode(message(payload={"table": "cycles", "x": float("nan")}))
