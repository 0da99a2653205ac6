"""The study record through the daemon and ``cryoctl`` (issue 19): open under a
study profile (flags or --from), every refusal with the message it prints, the
baseline pain gate on run and freeze, adverse events while open and refused after
close, FHIR and REDCap exports from the running daemon; and the control commands'
models (issue 16) refusing unknown arguments and NaN before anything acts."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cryod.daemon import control_commands as cc
from cryod.daemon.control import ControlError
from cryod.research.profile import builtin_study_path
from cryod.research.redcap_rules import check_redcap_files
from tests.e2e.harness import Daemon, Sim, sim_and_daemon

STUDY = "mortons-neuroma-example"
OPEN_FLAGS = [
    "--patient-ref", "MN-0077", "--site", "third intermetatarsal space", "--side", "left",
    "--indication", "mortons_neuroma", "--imaging", "ultrasound", "--anaesthesia", "local",
    "--probe-model", "SIM-17G", "--probe-lot", "L1", "--study", STUDY,
]  # fmt: skip
FROM_FILE = """\
[consent]
confirmed = true
form_version = "1.0"

[selection]
symptom_duration_months = 12
prior_treatments = ["insoles_footwear"]
aetiology = "idiopathic_mortons"
nerve = "common_plantar_digital"
web_space = "third"
neuroma_size_mm = 5.5

[selection.eligibility.items]
age_18_or_over = true
symptoms_6_months = true
imaging_confirmed = true
conservative_failed = true
no_local_infection = true

[procedure]
technical_success = true
anaesthetic_agent = "lidocaine 1%"
setting = "day_case"
probe_gauge = 17
probe_count = 1
"""


def cryoctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryod.daemon.ctl", "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _cycles(db: Path, procedure_id: int) -> int:
    con = sqlite3.connect(db)
    try:
        return int(
            con.execute(
                "SELECT count(*) FROM cycles WHERE procedure_id = ?", (procedure_id,)
            ).fetchone()[0]
        )
    finally:
        con.close()


def valves(sim: Sim) -> list[dict[str, Any]]:
    return [e for e in sim.events("valve") if e.get("open")]


# ---- the command models ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("freeze", {"probe": 1, "seconds": 30, "note": 1}, "note: unknown argument"),
        ("freeze", {"probe": 1, "seconds": math.nan}, "seconds: NaN or Infinity is not a value"),
        ("extend", {"seconds": math.inf}, "seconds: NaN or Infinity is not a value"),
        ("freeze", {"probe": 1}, "seconds: Field required"),
        ("thaw", {"probe": 1, "mode": "plasma"}, "mode: Input should be 'passive' or 'active'"),
        ("ae_add", {"event": {"ctcae_grade": math.nan}}, "event: NaN or Infinity is not a value"),
        ("ae_update", {"ae_id": 1, "changes": {}}, "changes: Dictionary should have at least 1"),
        ("procedure_open", {"patient_ref": "A-1", "selection": {"x": [math.inf]}},
         "selection: NaN or Infinity is not a value"),
        ("procedure_open", {"patient_name": "John Smith"}, "patient_name: unknown argument"),
        ("export", {"format": "xml"}, "format: Input should be"),
    ],
)  # fmt: skip
def test_each_command_model_refuses_with_a_reason(
    name: str, args: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValidationError) as info:
        cc.COMMANDS[name].model_validate(args)
    message = cc.refusal_message(info.value)
    assert expected in message
    assert "John Smith" not in message  # the input is never repeated


def test_every_command_on_the_socket_has_a_model() -> None:
    from cryod.daemon.config import load_config_data
    from cryod.daemon.service import Daemon as Service

    loaded = load_config_data(
        {
            "daemon": {"database": "/nonexistent/x.db", "control_socket": "/nonexistent/s"},
            "consoles": [
                {
                    "id": "c1",
                    "driver": "modbus-tcp",
                    "simulated": True,
                    "options": {"host": "127.0.0.1", "port": 1},
                }
            ],
        },
        source="<test>",
        base=Path("/nonexistent/cryod.toml"),
    )
    assert set(Service(loaded)._handlers()) == set(cc.COMMANDS)
    assert cc.finite_copy({"a": [math.nan, 1.0]}) == {"a": ["nan", 1.0]}
    kept = cc.recorded_args({"study_toml": "x" * 5000, "seconds": math.inf})
    assert kept == {
        "study_toml": "sha256:" + hashlib.sha256(b"x" * 5000).hexdigest() + " (5000 bytes)",
        "seconds": "inf",
    }
    # a refused argument's value is never kept: it could be a patient's name (rule 6)
    kept = cc.recorded_args(
        {"patient_name": "John Smith", "patient_ref": "MN-0001"}, "procedure_open"
    )
    assert kept == {"patient_name": cc.NOT_RECORDED, "patient_ref": "MN-0001"}


# ---- through the daemon --------------------------------------------------------------------
@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, Daemon, Path]]:
    wd = tmp_path_factory.mktemp("study")
    with sim_and_daemon(wd, speed=10.0) as (sim, d):
        yield sim, d, wd


def _refused(r: subprocess.CompletedProcess[str], code: str) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"cryoctl: refused: {code}:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr


def test_the_study_record_through_cryoctl(rig: tuple[Sim, Daemon, Path]) -> None:
    sim, d, wd = rig
    sock = d.socket
    form = wd / "study-fields.toml"
    form.write_text(FROM_FILE)

    # 1. refusals at open: each missing field and out-of-list value named, and consent
    err = _refused(cryoctl(sock, "procedure", "open", *OPEN_FLAGS), "rejected")
    for line in (
        "consent.confirmed: study MN-CRYO-EXAMPLE requires consent confirmed before the "
        "procedure opens",
        "selection.eligibility: required by study MN-CRYO-EXAMPLE",
        "selection.nerve: required by study MN-CRYO-EXAMPLE",
        "procedure.setting: required by study MN-CRYO-EXAMPLE",
    ):
        assert line in err, err
    err = _refused(
        cryoctl(
            sock, "procedure", "open", *OPEN_FLAGS, "--from", str(form), "--web-space", "first"
        ),
        "rejected",
    )
    assert (
        "selection.web_space: 'first' is not allowed by study MN-CRYO-EXAMPLE "
        "(allowed: second, third)"
    ) in err
    no_consent = FROM_FILE.replace("confirmed = true", "confirmed = false")
    (wd / "no-consent.toml").write_text(no_consent)
    err = _refused(
        cryoctl(sock, "procedure", "open", *OPEN_FLAGS, "--from", str(wd / "no-consent.toml")),
        "rejected",
    )
    assert "consent.confirmed: study MN-CRYO-EXAMPLE requires consent confirmed" in err
    r = cryoctl(sock, "procedure", "open", *OPEN_FLAGS, "--from", str(wd / "missing.toml"))
    assert (r.returncode, r.stderr.strip()) == (
        7,
        f"cryoctl: --from {wd / 'missing.toml'}: no such file",
    )
    assert d.status()["procedure"] is None  # nothing opened

    err = _refused(
        cryoctl(sock, "procedure", "open", *OPEN_FLAGS, "--from", str(form), "--study", "nope"),
        "rejected",
    )
    assert "study 'nope' is not a study profile shipped with cryod" in err
    bad_profile = wd / "bad-profile.toml"
    bad_profile.write_text(
        builtin_study_path(STUDY).read_text().replace('"Europe/London"', '"Europe/Lundon"')
    )
    err = _refused(
        cryoctl(sock, "procedure", "open", *OPEN_FLAGS, "--study", str(bad_profile)), "rejected"
    )
    assert f"{bad_profile}: site.time_zone: 'Europe/Lundon' is not an IANA time zone" in err, err

    # 2. opened from the file and flags, under a profile file cryoctl reads and sends
    own_profile = wd / "our-study.toml"
    own_profile.write_text(builtin_study_path(STUDY).read_text())
    r = cryoctl(
        sock, "procedure", "open", *OPEN_FLAGS, "--from", str(form), "--study", str(own_profile)
    )
    assert r.returncode == 0, r.stderr
    pid = json.loads(r.stdout)["procedure_id"]
    shown = json.loads(cryoctl(sock, "show", str(pid)).stdout)
    assert shown["study"]["profile"]["profile_id"] == "MN-CRYO-EXAMPLE"
    assert shown["study"]["profile"]["content_hash"].startswith("sha256:")
    assert shown["study"]["details"]["gas"] == "argon"  # from the console's profile
    assert shown["study"]["details"]["imaging"] == ["ultrasound"]

    # 3. run and freeze wait for the baseline pain score; nothing moves
    before = len(valves(sim))
    gate = (
        "study MN-CRYO-EXAMPLE requires the baseline pain score (nrs_0_10) before the first freeze"
    )
    assert gate in _refused(cryoctl(sock, "run", "classic-double-90"), "baseline_pain_required")
    err = _refused(
        cryoctl(sock, "freeze", "--probe", "1", "--seconds", "10"), "baseline_pain_required"
    )
    assert gate in err
    assert len(valves(sim)) == before
    assert _cycles(wd / "cryod.db", pid) == 0  # no cycle was recorded, so none started
    err = _refused(cryoctl(sock, "baseline-pain", "11"), "rejected")
    assert "baseline_pain.score: an NRS score is an integer 0-10 (got 11)" in err
    r = cryoctl(sock, "baseline-pain", "6")
    assert r.returncode == 0, r.stderr

    # 4. adverse events while open: refusals with their messages, then one recorded
    good = [
        "--category", "damage_to_adjacent_structures", "--subcategory", "cold_injury",
        "--term", "skin blanching at the entry site", "--grade", "1", "--serious", "no",
        "--related-device", "possibly", "--related-procedure", "probably",
        "--outcome", "recovering_resolving", "--action", "treatment_given",
    ]  # fmt: skip
    onset = ["--onset", "2099-01-01"]
    for extra, expected in (
        (["--onset", "2020-01"], "adverse_event.onset: 2020-01 is before the procedure opened"),
        (
            ["--onset", "2099-02", "--resolution", "2099-01", "--outcome", "recovered_resolved"],
            "adverse_event.resolution: 2099-01 is before the onset 2099-02",
        ),
        ([*onset, "--grade", "6"], "adverse_event.ctcae_grade: CTCAE v5 grade must be 1-5 (got 6)"),
        ([*onset, "--category", "gremlins"], "adverse_event.category: unknown code 'gremlins'"),
    ):
        err = _refused(cryoctl(sock, "ae", "add", *good, *extra), "rejected")
        assert expected in err, err
    r = cryoctl(sock, "ae", "add", *good, *onset)
    assert r.returncode == 0, r.stderr
    ae_id = json.loads(r.stdout)["ae_id"]
    r = cryoctl(sock, "ae", "update", str(ae_id), "--outcome", "recovered_resolved",
                "--resolution", "2099-01-03")  # fmt: skip
    assert r.returncode == 0, r.stderr
    (listed,) = json.loads(cryoctl(sock, "ae", "list").stdout)
    assert (listed["ae_id"], listed["outcome"]) == (ae_id, "recovered_resolved")

    # 5. exports of the open procedure from the running daemon
    r = cryoctl(sock, "export", str(pid), "--format", "fhir")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resourceType"] == "Bundle"
    r = cryoctl(sock, "export", str(pid), "--format", "redcap", "--out", str(wd / "redcap"))
    assert r.returncode == 0, r.stderr
    files = {p.name: p.read_text(encoding="utf-8") for p in (wd / "redcap").iterdir()}
    assert check_redcap_files(files) == []

    # 6. close; after it, adverse events are the collector's
    r = cryoctl(sock, "procedure", "close", "--notes", "ok")
    assert r.returncode == 0, r.stderr
    err = _refused(cryoctl(sock, "ae", "add", *good, *onset), "no_procedure")
    assert "after close is the study collector's to record" in err
    err = _refused(cryoctl(sock, "ae", "update", str(ae_id), "--grade", "2"), "rejected")
    assert f"procedure {pid} is closed: a change to an adverse event after close" in err
    with pytest.raises(ControlError) as info:
        d.call("ae_add", {"event": {"category": "pain"}, "nonsense": 1})
    assert (info.value.code, info.value.message) == ("bad_request", "nonsense: unknown argument")
    # every refusal above reached the record as an operator action, with its reason
    con = sqlite3.connect(wd / "cryod.db")
    try:
        refused = con.execute(
            "SELECT action, reason FROM operator_actions WHERE accepted = 0 ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    assert [a for a, _ in refused] == [
        *["procedure_open"] * 5, "run", "freeze", "baseline_pain", *["ae_add"] * 4,
        "ae_add", "ae_update", "ae_add",
    ]  # fmt: skip
    assert all(reason for _, reason in refused)
    con = sqlite3.connect(wd / "cryod.db")
    try:
        (opened,) = con.execute(
            "SELECT args FROM operator_actions WHERE action = 'procedure_open' AND accepted = 1"
        ).fetchone()
    finally:
        con.close()
    assert json.loads(opened)["study_toml"].startswith("sha256:")  # not the file's text
    assert refused[-1][1] == "bad_request: nonsense: unknown argument"
    # an unknown argument is refused by name; its value is never recorded (rule 6)
    with pytest.raises(ControlError) as info:
        d.call("procedure_open", {"patient_name": "John Smith"})
    assert info.value.message.startswith("patient_name: unknown argument")
    con = sqlite3.connect(wd / "cryod.db")
    try:
        kept = [
            json.loads(a)
            for (a,) in con.execute(
                "SELECT args FROM operator_actions WHERE action = 'procedure_open' AND accepted = 0"
            )
        ]
        chain = " ".join(p for (p,) in con.execute("SELECT payload FROM audit"))
    finally:
        con.close()
    named = [a for a in kept if "patient_name" in a]
    assert named
    assert all(a["patient_name"] == cc.NOT_RECORDED for a in named)
    assert "John Smith" not in chain  # nor in the chain the record channel streams


def test_open_without_a_study_still_needs_the_procedures_own_fields(
    rig: tuple[Sim, Daemon, Path],
) -> None:
    _sim, d, _wd = rig
    r = cryoctl(d.socket, "procedure", "open", "--patient-ref", "MN-0001")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "cryoctl: procedure open needs --indication, --site, --side, --imaging, --anaesthesia "
        "(or --study/--from)"
    )
