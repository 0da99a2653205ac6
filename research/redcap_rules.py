"""What REDCap imports most often trip over, checked on the files themselves.

``check_redcap_files`` reads the CSV texts (the data dictionary, arms,
events, instrument-event mapping, repeating instruments and, when present,
records) and returns every problem, one line each, naming the file, the row
and the column. Rules:

1. the dictionary has REDCap's 18 columns in order; the first field is ``record_id``;
2. field and form names are lower case letters, digits and underscores,
   start with a letter, at most 26 characters; each field once;
3. each form's fields are contiguous;
4. choices: coded fields list ``code, label`` pairs separated by ``|``, codes
   are letters, digits and underscores (lower case for checkboxes), unique,
   labels not empty; other field types carry no choices; validation types
   are known and their min/max are numbers in order;
5. branching logic names only fields of the dictionary;
6. events: ``unique_event_name`` is ``<event_name>_arm_<arm>`` of a listed arm;
7. every form of the dictionary is mapped to an event, every mapping names a
   known event and form;
8. every repeating instrument is a form of the dictionary (its name equal to
   the form name) mapped to its event;
9. records: the header starts ``record_id``, ``redcap_event_name``,
   ``redcap_repeat_instrument``, ``redcap_repeat_instance``; every other column
   is a field of the dictionary, a checkbox choice column or a form's
   ``_complete``; each row's event is known, a repeating row names a
   repeating instrument of that event with a positive instance, a
   non-repeating row has none; values sit only in forms mapped to the row's
   event (a repeating row: only its instrument); values are valid for their
   field (choices, integer/number/date ranges, yes/no); no key twice.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Mapping

from .problems import Problem
from .redcap_design import (
    ARMS_FILE,
    DICTIONARY_COLUMNS,
    DICTIONARY_FILE,
    EVENTS_FILE,
    MAPPING_FILE,
    RECORDS_FILE,
    REPEATING_FILE,
)
from .redcap_records import RECORD_COLUMNS

__all__ = ["check_redcap_files"]

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_CODE = re.compile(r"-?[A-Za-z0-9_]+")
_CHECKBOX_CODE = re.compile(r"[a-z0-9_]+")
_BRANCH_FIELD = re.compile(r"\[([a-z][a-z0-9_]*)(?:\([^)]*\))?\]")
MAX_NAME = 26
CODED = ("dropdown", "radio", "checkbox")
FIELD_TYPES = (
    "text",
    "notes",
    "dropdown",
    "radio",
    "checkbox",
    "yesno",
    "truefalse",
    "calc",
    "descriptive",
    "file",
    "slider",
    "sql",
)
VALIDATIONS = (
    "",
    "integer",
    "number",
    "date_ymd",
    "date_dmy",
    "date_mdy",
    "datetime_ymd",
    "datetime_seconds_ymd",
    "time",
    "email",
    "phone",
    "alpha_only",
    "zipcode",
)


def _read(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = [dict(r) for r in reader]
    return list(reader.fieldnames or []), rows


class _Checker:
    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = files
        self.problems: list[Problem] = []
        self.fields: dict[str, dict[str, str]] = {}
        self.forms: list[str] = []
        self.events: set[str] = set()
        self.mapping: set[tuple[str, str]] = set()
        self.repeating: set[tuple[str, str]] = set()

    def add(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def run(self) -> list[Problem]:
        for name in (DICTIONARY_FILE, ARMS_FILE, EVENTS_FILE, MAPPING_FILE, REPEATING_FILE):
            if name not in self.files:
                self.add(name, "missing")
        if self.problems:
            return self.problems
        self.dictionary()
        self.events_and_mapping()
        if RECORDS_FILE in self.files:
            self.records()
        return self.problems

    # ---- rules 1-5 ---------------------------------------------------------------
    def dictionary(self) -> None:
        header, rows = _read(self.files[DICTIONARY_FILE])
        if tuple(header) != DICTIONARY_COLUMNS:
            self.add(
                f"{DICTIONARY_FILE}:1",
                f"header must be REDCap's 18 columns in order (got {len(header)}: "
                f"{', '.join(header[:3])}...)",
            )
            return
        col = {
            "name": DICTIONARY_COLUMNS[0],
            "form": DICTIONARY_COLUMNS[1],
            "type": DICTIONARY_COLUMNS[3],
            "choices": DICTIONARY_COLUMNS[5],
            "validation": DICTIONARY_COLUMNS[7],
            "min": DICTIONARY_COLUMNS[8],
            "max": DICTIONARY_COLUMNS[9],
            "branching": DICTIONARY_COLUMNS[11],
        }
        if not rows or rows[0][col["name"]] != "record_id":
            self.add(f"{DICTIONARY_FILE}:2", "the first field must be record_id")
        closed: set[str] = set()
        previous = ""
        for n, row in enumerate(rows, start=2):
            where = f"{DICTIONARY_FILE}:{n}"
            name, form = row[col["name"]], row[col["form"]]
            for what, value in (("field", name), ("form", form)):
                if not _NAME.fullmatch(value) or len(value) > MAX_NAME:
                    self.add(
                        where,
                        f"{what} name {value!r}: lower case letters, digits and underscores, "
                        f"starting with a letter, at most {MAX_NAME} characters",
                    )
            if name in self.fields:
                self.add(where, f"field {name!r} defined twice")
            if form != previous:
                if form in closed:
                    self.add(where, f"form {form!r}: its fields are not contiguous")
                closed.add(previous)
                previous = form
                if form not in self.forms:
                    self.forms.append(form)
            self.fields[name] = {k: row[v] for k, v in col.items()}
            self.field_rules(where, self.fields[name])
        for name, f in self.fields.items():
            for ref in _BRANCH_FIELD.findall(f["branching"]):
                if ref not in self.fields:
                    self.add(
                        DICTIONARY_FILE, f"{name}: branching logic names unknown field {ref!r}"
                    )

    def field_rules(self, where: str, f: dict[str, str]) -> None:
        kind, choices, validation = f["type"], f["choices"], f["validation"]
        if kind not in FIELD_TYPES:
            self.add(where, f"unknown field type {kind!r}")
        if kind in CODED:
            codes = _choice_codes(choices)
            if codes is None:
                self.add(where, f"{f['name']}: choices must be 'code, label | code, label'")
                return
            pattern = _CHECKBOX_CODE if kind == "checkbox" else _CODE
            for code in codes:
                if not pattern.fullmatch(code):
                    self.add(where, f"{f['name']}: choice code {code!r} is not a valid code")
            if len(set(codes)) != len(codes):
                self.add(where, f"{f['name']}: a choice code appears twice")
        elif choices and kind not in ("calc", "slider", "sql"):
            self.add(where, f"{f['name']}: a {kind} field carries no choices")
        if validation not in VALIDATIONS:
            self.add(where, f"{f['name']}: unknown validation type {validation!r}")
        if validation in ("integer", "number"):
            bounds = []
            for key in ("min", "max"):
                if f[key] == "":
                    continue
                try:
                    bounds.append(float(f[key]))
                except ValueError:
                    self.add(where, f"{f['name']}: validation {key} {f[key]!r} is not a number")
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                self.add(where, f"{f['name']}: validation min is above max")

    # ---- rules 6-8 ---------------------------------------------------------------
    def events_and_mapping(self) -> None:
        _, arms = _read(self.files[ARMS_FILE])
        arm_nums = {a.get("arm_num", "") for a in arms}
        _, events = _read(self.files[EVENTS_FILE])
        for n, e in enumerate(events, start=2):
            where = f"{EVENTS_FILE}:{n}"
            name, arm, unique = (
                e.get("event_name", ""),
                e.get("arm_num", ""),
                e.get("unique_event_name", ""),
            )
            if arm not in arm_nums:
                self.add(where, f"arm {arm!r} is not in {ARMS_FILE}")
            if unique != f"{name}_arm_{arm}" or not _NAME.fullmatch(name):
                self.add(where, f"unique_event_name {unique!r} is not <event_name>_arm_<arm_num>")
            if unique in self.events:
                self.add(where, f"event {unique!r} listed twice")
            self.events.add(unique)
        _, mapping = _read(self.files[MAPPING_FILE])
        for n, m in enumerate(mapping, start=2):
            where = f"{MAPPING_FILE}:{n}"
            event, form = m.get("unique_event_name", ""), m.get("form", "")
            if event not in self.events:
                self.add(where, f"unknown event {event!r}")
            if form not in self.forms:
                self.add(where, f"unknown form {form!r}")
            self.mapping.add((event, form))
        mapped = {form for _, form in self.mapping}
        for form in self.forms:
            if form not in mapped:
                self.add(MAPPING_FILE, f"form {form!r} is not mapped to any event")
        _, repeating = _read(self.files[REPEATING_FILE])
        for n, r in enumerate(repeating, start=2):
            where = f"{REPEATING_FILE}:{n}"
            event, form = r.get("event_name", ""), r.get("form_name", "")
            if event not in self.events:
                self.add(where, f"unknown event {event!r}")
            if form and form not in self.forms:
                self.add(where, f"repeating instrument {form!r} is not a form name")
            elif form and (event, form) not in self.mapping:
                self.add(where, f"repeating instrument {form!r} is not mapped to {event!r}")
            self.repeating.add((event, form))

    # ---- rule 9 ------------------------------------------------------------------
    def records(self) -> None:
        header, rows = _read(self.files[RECORDS_FILE])
        if tuple(header[:4]) != RECORD_COLUMNS:
            self.add(f"{RECORDS_FILE}:1", f"header must start {', '.join(RECORD_COLUMNS)}")
            return
        owner: dict[str, str] = {}  # column -> form
        for name, f in self.fields.items():
            if f["type"] == "checkbox":
                for code in _choice_codes(f["choices"]) or []:
                    owner[f"{name}___{code}"] = f["form"]
            else:
                owner[name] = f["form"]
        for form in self.forms:
            owner[f"{form}_complete"] = form
        for column in header[4:]:
            if column not in owner:
                self.add(f"{RECORDS_FILE}:1", f"column {column!r} is not in the data dictionary")
        seen: set[tuple[str, ...]] = set()
        for n, row in enumerate(rows, start=2):
            where = f"{RECORDS_FILE}:{n}"
            rid, event = row["record_id"], row["redcap_event_name"]
            instrument, instance = row["redcap_repeat_instrument"], row["redcap_repeat_instance"]
            key = (rid, event, instrument, instance)
            if key in seen:
                self.add(where, "the same record, event, instrument and instance twice")
            seen.add(key)
            if not rid:
                self.add(where, "record_id is empty")
            if event not in self.events:
                self.add(where, f"unknown event {event!r}")
                continue
            if instrument:
                if (event, instrument) not in self.repeating:
                    self.add(where, f"{instrument!r} is not a repeating instrument of {event!r}")
                if not instance.isdigit() or int(instance) < 1:
                    self.add(where, f"repeat instance {instance!r} is not a positive integer")
            elif instance:
                self.add(where, "a repeat instance without a repeating instrument")
            for column in header[4:]:
                value = row.get(column) or ""
                of = owner.get(column)
                if value == "" or of is None:
                    continue
                if (event, of) not in self.mapping:
                    self.add(where, f"{column}: form {of!r} is not mapped to {event!r}")
                elif instrument and of != instrument:
                    self.add(where, f"{column}: not in the repeating instrument {instrument!r}")
                elif not instrument and (event, of) in self.repeating:
                    self.add(where, f"{column}: form {of!r} repeats in {event!r}")
                self.value(where, column, value)

    def value(self, where: str, column: str, value: str) -> None:
        if column.endswith("_complete") and column not in self.fields:
            if value not in ("0", "1", "2"):
                self.add(where, f"{column}: {value!r} is not 0, 1 or 2")
            return
        if "___" in column and column not in self.fields:
            if value not in ("0", "1"):
                self.add(where, f"{column}: a checkbox is 0 or 1 (got {value!r})")
            return
        f = self.fields[column]
        kind, validation = f["type"], f["validation"]
        if kind in ("dropdown", "radio"):
            codes = _choice_codes(f["choices"]) or []
            if value not in codes:
                self.add(where, f"{column}: {value!r} is not a choice ({', '.join(codes)})")
        elif kind in ("yesno", "truefalse"):
            if value not in ("0", "1"):
                self.add(where, f"{column}: {value!r} is not 0 or 1")
        elif validation in ("integer", "number"):
            try:
                number = int(value) if validation == "integer" else float(value)
            except ValueError:
                self.add(where, f"{column}: {value!r} is not an {validation}")
                return
            lo, hi = _number(f["min"]), _number(f["max"])
            if (lo is not None and number < lo) or (hi is not None and number > hi):
                self.add(
                    where, f"{column}: {value} is outside {f['min'] or '-inf'}..{f['max'] or 'inf'}"
                )
        elif validation in ("date_ymd", "datetime_seconds_ymd"):
            fmt = "%Y-%m-%d" if validation == "date_ymd" else "%Y-%m-%d %H:%M:%S"
            try:
                dt.datetime.strptime(value, fmt)
            except ValueError:
                self.add(where, f"{column}: {value!r} is not {validation}")


def _number(text: str) -> float | None:
    """A validation bound, ``None`` when empty or not a number (reported by rule 4)."""
    try:
        return float(text)
    except ValueError:
        return None


def _choice_codes(choices: str) -> list[str] | None:
    """The codes of ``code, label | code, label``; ``None`` when malformed."""
    codes = []
    for part in choices.split("|"):
        code, sep, label = part.strip().partition(",")
        if not sep or not code.strip() or not label.strip():
            return None
        codes.append(code.strip())
    return codes


def check_redcap_files(files: Mapping[str, str]) -> list[Problem]:
    """Every rule of the module docstring over ``files`` (file name -> CSV text)."""
    return _Checker(files).run()
