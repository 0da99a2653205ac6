"""``cryod demo`` shows the whole record a study uses (issue 19): its procedure is
opened under the example Morton's neuroma profile with selection and procedure
details, a baseline pain score is recorded before the first freeze, a demo adverse
event before close; the demo exports to JSON (schema-valid), CSV, FHIR (both
validations) and REDCap (every rule), and the report shows it all."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from cryod.daemon.store import export
from cryod.research.fhir_check import validate_bundle
from cryod.research.profile import load_study_profile
from cryod.research.redcap_rules import check_redcap_files

pytestmark = pytest.mark.timeout(300)


def cli(*args: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("demo")
    db = wd / "demo.db"
    r = cli("cryod.daemon.cli", "demo", "--speed", "50", "--quiet", "--db", str(db),
            "--report", str(wd / "report.html"))  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return db


def ctl(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = cli("cryod.daemon.ctl", *args, "--db", str(db), timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def test_the_demo_exports_json_and_csv(demo: Path) -> None:
    data = json.loads(ctl(demo, "export").stdout)
    jsonschema.validate(data, export.load_schema(), cls=jsonschema.Draft202012Validator)
    (p,) = data["procedures"]
    profile = load_study_profile("mortons-neuroma-example")
    assert p["study"]["profile_id"] == "MN-CRYO-EXAMPLE"
    assert p["study"]["profile_hash"] == profile.content_hash
    assert p["study"]["consent_confirmed"] is True
    assert p["study"]["selection"]["web_space"] == "third"
    assert p["study"]["details"]["gas"] == "argon"
    (pain,) = p["pain_assessments"]
    assert (pain["time_point"], pain["scale"], pain["score"]) == ("baseline", "nrs_0_10", 7.0)
    first_freeze = min(c["started_at"] for c in p["cycles"] if c["phase"] == "freeze")
    assert pain["assessed_at"] < first_freeze  # before the first freeze
    (ae,) = p["adverse_event_rows"]
    assert (ae["category"], ae["subcategory"], ae["ctcae_grade"]) == (
        "damage_to_adjacent_structures",
        "cold_injury",
        1,
    )
    assert p["closed_at"] is not None
    assert ae["recorded_at"] <= p["closed_at"]
    assert [t["probe"] for t in p["probe_totals"]] == [1]
    assert p["probe_totals"][0]["freeze_s"] > 0
    assert export.verify_export(data, db=demo).ok
    rows = list(csv.DictReader(io.StringIO(ctl(demo, "export", "--format", "csv").stdout)))
    assert rows
    assert all(r["study_profile_id"] == "MN-CRYO-EXAMPLE" for r in rows)
    assert {r["baseline_pain_score"] for r in rows} == {"7.0"}
    assert {r["ae_rows"] for r in rows} == {"1"}


def test_the_demo_exports_fhir_passing_both_validations(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle.json"
    ctl(demo, "export", "--format", "fhir", "--out", str(out))
    bundle = json.loads(out.read_text())
    assert validate_bundle(bundle, load_study_profile("mortons-neuroma-example")) == []
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"ResearchStudy", "ResearchSubject", "Patient", "Procedure", "Device",
            "Observation", "AdverseEvent"} <= kinds  # fmt: skip


def test_the_demo_exports_redcap_passing_every_rule(demo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "redcap"
    r = ctl(demo, "export", "--format", "redcap", "--out", str(folder))
    files = {p.name: p.read_text(encoding="utf-8") for p in folder.iterdir()}
    assert sorted(Path(line).name for line in r.stdout.split()) == sorted(files)
    assert check_redcap_files(files) == []
    records = list(csv.DictReader(io.StringIO(files["records.csv"], newline="")))
    assert {r["record_id"] for r in records} == {"DEMO-0001"}
    assert {r["redcap_repeat_instrument"] for r in records} >= {
        "procedure",
        "cycle",
        "adverse_event",
    }


def test_the_demo_report_shows_the_study_record(demo: Path) -> None:
    html = (demo.parent / "report.html").read_text(encoding="utf-8")
    plain = re.sub(r"<[^>]+>", " ", html)
    for shown in (
        "Study record",
        "MN-CRYO-EXAMPLE v1.0.0",
        "Selection: Web space",
        "Third (3rd/4th toe)",
        "Procedure: Technical success",
        "Baseline pain",
        "7 on Numeric rating scale 0-10 (integer)",
        "Adverse events",
        "Cold injury of the skin",
    ):
        assert shown.replace("'", "&#x27;") in plain, shown
