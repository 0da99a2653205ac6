"""Study profiles: the examples load, each refusal names file, key and reason; a stable hash."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cryod.research.profile import (
    StudyProfile,
    StudyProfileError,
    builtin_study_names,
    builtin_study_path,
    canonical_json,
    load_study_profile,
    profile_problems,
)
from cryod.research.tomlfile import MAX_TOML_BYTES

EXAMPLES = ("mortons-neuroma-example", "stump-neuroma-example")


def _text(name: str = "mortons-neuroma-example") -> str:
    return builtin_study_path(name).read_text()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def _refused(tmp_path: Path, text: str) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(StudyProfileError) as err:
        load_study_profile(path)
    lines = str(err.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return [line.removeprefix(f"{path}: ") for line in lines]


def test_both_example_profiles_ship_and_load() -> None:
    assert set(EXAMPLES) <= set(builtin_study_names())
    mortons = load_study_profile("mortons-neuroma-example")
    stump = load_study_profile("stump-neuroma-example")
    assert mortons.codes.indications[0].code == "30085007"
    assert [tp.target_day for tp in mortons.follow_up.time_points] == [0, 7, 30, 45, 91, 182, 365]
    assert [tp.id for tp in stump.follow_up_points] == ["d7", "m1", "m3", "m6", "m12"]
    assert mortons.instruments.pain.scale == "nrs_0_10"
    assert stump.instruments.pain.scale == "vas_0_100_mm"
    assert mortons.follow_up.restart_after_repeat
    assert not stump.follow_up.restart_after_repeat
    assert mortons.zone.key == "Europe/London"


def test_stamp_carries_id_version_and_hash() -> None:
    p = load_study_profile("mortons-neuroma-example")
    stamp = p.stamp()
    assert (stamp.profile_id, stamp.version) == ("MN-CRYO-EXAMPLE", "1.0.0")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", stamp.content_hash)


def test_content_hash_ignores_layout_but_not_content(tmp_path: Path) -> None:
    original = load_study_profile("mortons-neuroma-example")
    # comments, blank lines and an integer written as a float do not change the content
    relaid = "\n".join(
        line for line in _text().splitlines() if line.strip() and not line.startswith("#")
    ).replace("score_max = 100", "score_max = 100.0  # same number")
    assert load_study_profile(_write(tmp_path, relaid)).content_hash == original.content_hash
    # key order inside a table does not matter either
    data = tomllib.loads(_text())
    data["study"] = dict(reversed(list(data["study"].items())))
    assert StudyProfile.model_validate(data).content_hash == original.content_hash
    # a changed value does
    changed = _text().replace('version = "1.0.0"', 'version = "1.0.1"')
    assert load_study_profile(_write(tmp_path, changed)).content_hash != original.content_hash


def test_canonical_json_is_sorted_and_compact() -> None:
    profile = load_study_profile("stump-neuroma-example")
    text = canonical_json(profile)
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert list(data) == sorted(data)
    # the documented rule, recomputed by hand
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert profile.content_hash == f"sha256:{digest}"


def test_allowed_values_narrow_a_vocabulary() -> None:
    p = load_study_profile("mortons-neuroma-example")
    assert p.allowed_values("selection", "web_space") == ["second", "third"]
    assert p.allowed_values("procedure", "gas") == ["argon", "n2o", "co2"]
    with pytest.raises(KeyError):
        p.allowed_values("procedure", "probe_model")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'time_zone = "Europe/London"',
            'time_zone = "Europe/Lundon"',
            "site.time_zone: 'Europe/Lundon' is not an IANA time zone (e.g. Europe/London)",
        ),
        ('version = "1.0.0"', 'version = "1.0.0"\ncolour = "blue"', "colour: unknown key"),
        (
            'schema = "cryod.study/1"',
            'schema = "cryod.study/9"',
            "schema: unknown code (allowed: 'cryod.study/1')",
        ),
        (
            'aetiology = ["idiopathic_mortons"]',
            'aetiology = ["idiopathic_morton"]',
            "selection.allowed.aetiology.0: unknown code 'idiopathic_morton' (codes: "
            "idiopathic_mortons, post_amputation, post_surgical, traumatic, other)",
        ),
        (
            '    "web_space",\n',
            '    "web_spaces",\n',
            "selection.required.6: unknown field 'web_spaces' (fields: aetiology, eligibility, "
            "indication, nerve, neuroma_size_mm, prior_treatments, symptom_duration_months, "
            "web_space)",
        ),
        (
            'setting = ["day_case", "outpatient"]',
            'setting = ["day_case", "outpatient"]\ntechnical_success = ["yes"]',
            "procedure.allowed.technical_success: allowed values apply to coded, text or "
            "integer fields",
        ),
        (
            "target_day = 45",
            "target_day = 20",
            "follow_up.time_points.3.target_day: time points must be in increasing "
            "target_day order",
        ),
        (
            "target_day = 45\nwindow_before_days = 5",
            "target_day = 45\nwindow_before_days = 12",
            "follow_up.time_points.3.window_before_days: window overlaps the window of 'm1'",
        ),
        ('id = "m3"', 'id = "m1"', "follow_up.time_points.4.id: duplicate id 'm1'"),
        (
            'id = "m3"',
            'id = "procedure"',
            "follow_up.time_points.4.id: 'procedure' is the procedure-day event, "
            "not a time point id",
        ),
        (
            'baseline = "baseline"',
            'baseline = "d0"',
            "follow_up.baseline: 'd0' is not a time point id",
        ),
        (
            'baseline = "baseline"',
            'baseline = "d7"',
            "follow_up.baseline: the baseline must be the first time point",
        ),
        (
            "score_max = 100",
            "score_max = 0",
            "instruments.function.score_max: score_max must be greater than score_min",
        ),
        (
            'url = "https://example.org/fhir/Questionnaire/eq-5d-5l"',
            'url = "eq-5d-5l"',
            "instruments.qol.url: string should match pattern '^[A-Za-z][A-Za-z0-9+.-]*:\\S+$'",
        ),
        (
            'scale = "nrs_0_10"',
            'scale = "nrs_0_11"',
            "instruments.pain.scale: unknown code "
            "'nrs_0_11' (allowed: 'nrs_0_10' or 'vas_0_100_mm')",
        ),
    ],
)
def test_each_refusal_names_key_and_reason(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = _text()
    assert old in text
    assert expected in _refused(tmp_path, text.replace(old, new, 1))


def test_duplicate_indication_key_is_refused(tmp_path: Path) -> None:
    text = _text("stump-neuroma-example").replace(
        'key = "traumatic_neuroma"', 'key = "stump_neuroma"'
    )
    assert "codes.indications.1.key: duplicate key 'stump_neuroma'" in _refused(tmp_path, text)


def test_eligibility_required_needs_a_checklist(tmp_path: Path) -> None:
    text = _text()
    start, end = text.index("[eligibility]"), text.index("[selection]")
    assert (
        "selection.required: 'eligibility' is required but the profile has no [eligibility] "
        "checklist" in _refused(tmp_path, text[:start] + text[end:])
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        _text()
        .replace("Europe/London", "Mars/Olympus")
        .replace('"idiopathic_mortons"', '"unknown_cause"')
        .replace("target_day = 45", "target_day = 20")
        .replace('version = "1.0.0"', 'version = "1.0.0"\nfoo = 1')
    )
    keys = [line.split(":")[0] for line in _refused(tmp_path, text)]
    assert keys == [
        "site.time_zone",
        "selection.allowed.aetiology.0",
        "follow_up.time_points.3.target_day",
        "foo",
    ]


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(StudyProfileError, match=r"study.toml: file not found$"):
        load_study_profile(tmp_path / "study.toml")
    with pytest.raises(StudyProfileError, match="not valid TOML"):
        load_study_profile(_write(tmp_path, "schema = "))
    big = _write(tmp_path, "# " + "x" * MAX_TOML_BYTES)
    with pytest.raises(StudyProfileError, match="is larger than 1048576"):
        load_study_profile(big)


def test_profile_problems_lists_problems_of_a_document() -> None:
    data: dict[str, Any] = tomllib.loads(_text())
    assert profile_problems(data) == []
    data["consent"]["required"] = "maybe"
    (problem,) = profile_problems(data)
    assert problem.field == "consent.required"
