"""The procedure's fields are written down once (``daemon/procedure_fields.py``) and
every other place agrees with that list: the open request, the control command,
the table, ``show`` and the export's CSV (issue 16)."""

from __future__ import annotations

from cryod.daemon import control_commands, ctl
from cryod.daemon.procedure_fields import CONSOLE_FIELDS, OPEN_FIELDS
from cryod.daemon.store import export, queries, records
from cryod.daemon.store.models import Procedure

OPEN = [f.name for f in OPEN_FIELDS]
COLUMNS = [c.key for c in Procedure.__table__.columns]


def test_the_open_request_is_the_operators_fields_and_the_consoles() -> None:
    assert sorted(records.ProcedureOpen.model_fields) == sorted(OPEN + list(CONSOLE_FIELDS))


def test_the_control_command_takes_the_operators_fields_and_the_study() -> None:
    fields = set(control_commands.ProcedureOpen.model_fields)
    assert fields == {"console", *OPEN, "study", "study_toml", "consent", "selection", "details"}


def test_the_table_has_a_column_for_each_field_in_order() -> None:
    assert [c for c in COLUMNS if c in OPEN] == OPEN
    assert set(CONSOLE_FIELDS) <= set(COLUMNS)


def test_cryoctl_has_a_flag_for_each_field_with_its_codes() -> None:
    parser = ctl.build_parser()
    sub = next(a for a in parser._actions if a.dest == "cmd").choices["procedure"]  # type: ignore[union-attr]
    opener = next(a for a in sub._actions if a.dest == "pcmd").choices["open"]  # type: ignore[union-attr]
    flags = {a.dest: a for a in opener._actions}
    for f in OPEN_FIELDS:
        assert f.name in flags, f.name
        assert flags[f.name].choices == f.codes, f.name


def test_show_and_the_csv_carry_every_column() -> None:
    metadata_names = {"procedure_id" if c == "id" else c for c in COLUMNS}
    procedure = Procedure(**dict.fromkeys(COLUMNS))
    assert set(queries.procedure_metadata(procedure)) == metadata_names
    csv_names = {
        "id": "procedure_id",
        "uuid": "procedure_uuid",
        "host_only_limits": "procedure_host_only_limits",
        "adverse_events": "adverse_events_recorded",
    }
    for column in COLUMNS:
        assert csv_names.get(column, column) in export.PROCEDURE_COLUMNS, column
