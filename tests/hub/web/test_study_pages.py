"""The study pages through Starlette's TestClient, on SQLite and PostgreSQL: the
summary as ``cryohub summary`` gives it, its plot, each export downloaded and
parsed (JSON loads, CSV parses, FHIR validates with fhir.resources and the
project's rules, REDCap and SDTM files parse), each download audited with who;
site-scoped readers get their site's subjects only, admins no study."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cryod.hub.config import load_config
from cryod.hub.exports import ExportInvalid
from cryod.hub.followup import subject_digest
from cryod.hub.summary import summarise
from cryod.hub.web import study_pages
from cryod.hub.web.app import WebSettings, create_app
from cryod.research.fhir_check import validate_bundle
from cryod.research.fhir_library import library_problems
from cryod.research.profile import builtin_study_path, load_study_profile
from tests.hub.test_followup_cli import journal, study, study_config  # noqa: F401  (fixtures)

from .conftest import csrf_of, login
from .study_data import PASSWORDS, STUDY_ID, exports_audited, followed  # noqa: F401

pytestmark = pytest.mark.timeout(300)
PAGE = f"/studies/{STUDY_ID}"


def client_as(settings: WebSettings, user: str) -> TestClient:
    c = TestClient(create_app(settings), base_url="http://testserver")
    r = login(c, user, PASSWORDS[user])
    assert r.status_code == 303, r.text
    return c


def download(c: TestClient, fmt: str, site: str = "") -> tuple[str, bytes, str]:
    """Press the export's button as the form does: file name, body, media type."""
    token = csrf_of(c.get(PAGE + (f"?site={site}" if site else "")).text)
    r = c.post(f"{PAGE}/export", data={"csrf": token, "site": site, "format": fmt})
    assert r.status_code == 200, r.text
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    return disposition.split('"')[1], r.content, r.headers["content-type"]


def unzip(body: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        return {n: z.read(n).decode("utf-8") for n in z.namelist()}


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def summary_text(settings: WebSettings, config: Path, site: str | None) -> str:
    """What ``cryohub summary`` prints for the same data and day."""
    from sqlalchemy.orm import Session

    from cryod.hub.followup_store import snapshot, study_data

    (profile,) = load_config(config).profiles
    with Session(settings.engine) as s:
        snap = snapshot(s, STUDY_ID, site)
    data = study_data(profile, snap, settings.wall())
    return summarise(data, settings.wall().date(), withdrawn=snap.withdrawn).text()


def test_the_study_page_shows_the_summary_tables_and_plot(
    followed: WebSettings,  # noqa: F811
    study: Path,  # noqa: F811
) -> None:
    with client_as(followed, "mon") as c:
        listing = c.get("/studies").text
        assert f'href="{PAGE}"' in listing
        r = c.get(PAGE)
        assert r.status_code == 200
        html = r.text
        expected = summary_text(followed, study, None)
        assert "Study MN-CRYO-EXAMPLE: 4 subject(s), 4 procedure(s) (on 2026-05-20" in expected
        assert "4 subject(s), 4 procedure(s) on 2026-05-20" in html
        # every pain row's n, median and IQR as cryohub summary prints them
        lines = expected.split("by time point\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        assert len(lines) >= 4
        pain = html.split('id="pain"', 1)[1].split("</table>", 1)[0]
        assert 'title="no paired baseline">—</td>' in pain  # a dash with its reason
        pain = re.sub(r' title="[^"]*"', "", pain)
        for line in lines:
            tp, n, median, iqr, change_n, change = line.split()
            assert f"({tp})</td><td>{n}</td>" in pain, (line, pain)
            cells = f">{median}</td><td>{iqr}</td><td>{change_n}</td><td>{change}</td>"
            assert cells in pain, (line, pain)
        assert "<td>infection</td><td>2</td><td>probably</td>" in html
        assert "Subjects lost to follow-up: 1" in expected
        assert "subjects lost to follow-up: 1" in html
        # a figure that cannot be computed is a dash with its reason, never 0
        completeness = html.split('id="completeness"', 1)[1].split("</table>", 1)[0]
        assert "<td>m3</td><td>0</td>" in completeness
        assert '<td title="no window closed yet">—</td>' in completeness
        img = html.split('<img src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        png = c.get(img)
        assert png.status_code == 200
        assert png.headers["content-type"] == "image/png"
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        # a date that is not one: the error beside the field, what was typed kept
        bad = c.get(PAGE, params={"on": "20-05-2026"})
        assert bad.status_code == 400
        field = bad.text.split('id="s-on"', 1)[1].split("</div>", 1)[0]
        assert 'value="20-05-2026"' in field
        assert "a date is YYYY-MM-DD" in field
        assert c.get(img.replace("on=2026-05-20", "on=nope")).status_code == 400


def check_export(fmt: str, name: str, body: bytes, media: str, subjects: set[str]) -> None:
    """Each format parsed as its reader would, and it holds exactly ``subjects``."""
    profile = load_study_profile(builtin_study_path("mortons-neuroma-example"))
    if fmt == "json":
        assert media.startswith("application/json")
        assert name.endswith(".json")
        doc = json.loads(body)
        assert {s["subject"] for s in doc["subjects"]} == subjects
    elif fmt == "fhir":
        assert media.startswith(("application/fhir+json", "application/fhir"))
        bundle = json.loads(body)
        assert library_problems(bundle) == []
        assert validate_bundle(bundle, profile) == []
        patients = [
            e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        ]
        assert len(patients) == len(subjects)
    else:
        assert media == "application/zip"
        assert name.endswith(f"-{fmt}.zip")
        files = unzip(body)
        assert files
        parsed = {n: rows(t) for n, t in files.items()}  # every file parses as CSV
        if fmt == "csv":
            assert {r["subject"] for r in parsed["procedures.csv"]} == subjects
        elif fmt == "redcap":
            assert {r["record_id"] for r in parsed["records.csv"]} == subjects
        else:
            assert {r["USUBJID"] for r in parsed["dm.csv"]} == {f"{STUDY_ID}-{s}" for s in subjects}


@pytest.mark.parametrize(
    ("user", "site", "subjects"),
    [
        ("mon", "", {"MN-0001", "MN-0002", "MN-0003", "MN-0004"}),
        ("sita", "site-a", {"MN-0001", "MN-0002", "MN-0003"}),
    ],
)
def test_each_export_downloads_parses_and_is_audited_with_who(
    followed: WebSettings,  # noqa: F811
    user: str,
    site: str,
    subjects: set[str],
) -> None:
    before = len(exports_audited(followed.engine))
    with client_as(followed, user) as c:
        for fmt in ("json", "csv", "fhir", "redcap", "sdtm"):
            name, body, media = download(c, fmt, site)
            check_export(fmt, name, body, media, subjects)
            entry = exports_audited(followed.engine)[-1]
            assert entry["by"] == user
            assert (entry["study"], entry["site"], entry["format"]) == (
                STUDY_ID,
                site or None,
                fmt,
            )
            assert entry["subjects"] == sorted(subject_digest(STUDY_ID, s) for s in subjects)
            files = unzip(body) if media == "application/zip" else None
            digests = entry["files"]
            assert isinstance(digests, dict)
            if files is not None:
                assert digests == {
                    n: hashlib.sha256(t.encode()).hexdigest() for n, t in files.items()
                }
            else:
                assert list(digests.values()) == [hashlib.sha256(body).hexdigest()]
    assert len(exports_audited(followed.engine)) == before + 5


def test_site_staff_see_their_sites_only_and_admins_no_study(
    followed: WebSettings,  # noqa: F811
) -> None:
    with client_as(followed, "sita") as c:
        assert f'href="{PAGE}?site=site-a"' in c.get("/studies").text
        html = c.get(PAGE).text  # defaults to the one scope they have
        assert "Study MN-CRYO-EXAMPLE — site site-a" in html
        assert "3 subject(s), 3 procedure(s)" in html
        assert c.get(PAGE, params={"site": "site-b"}).status_code == 404
        assert c.get(PAGE, params={"site": ""}).status_code == 404  # the whole study
        assert c.get(f"{PAGE}/pain.png", params={"site": "site-b"}).status_code == 404
        token = csrf_of(html)
        for site in ("", "site-b"):
            r = c.post(f"{PAGE}/export", data={"csrf": token, "site": site, "format": "json"})
            assert r.status_code == 404
    with client_as(followed, "mon") as c:
        assert "4 subject(s), 4 procedure(s)" in c.get(PAGE).text
        assert "2 subject(s)" not in c.get(PAGE, params={"site": "site-a"}).text
        assert "3 subject(s), 3 procedure(s)" in c.get(PAGE, params={"site": "site-a"}).text
    with client_as(followed, "root") as c:  # an admin grant alone: no study data
        assert STUDY_ID not in c.get("/studies").text
        assert c.get(PAGE).status_code == 404
        assert c.get(f"{PAGE}/pain.png").status_code == 404
        token = csrf_of(c.get("/studies").text)
        r = c.post(f"{PAGE}/export", data={"csrf": token, "site": "", "format": "json"})
        assert r.status_code == 404
    assert [e["by"] for e in exports_audited(followed.engine)] == []
    with TestClient(create_app(followed)) as anon:
        r = anon.get(PAGE, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login")


def test_an_export_without_its_token_a_bad_format_or_failing_checks_sends_and_records_nothing(
    followed: WebSettings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with client_as(followed, "mon") as c:
        token = csrf_of(c.get(PAGE).text)
        r = c.post(f"{PAGE}/export", data={"site": "", "format": "json"})
        assert r.status_code == 403
        r = c.post(f"{PAGE}/export", data={"csrf": token, "site": "", "format": "xlsx"})
        assert r.status_code == 400
        assert "format: &#39;xlsx&#39; is not one of json, csv, fhir, redcap, sdtm" in r.text

        def invalid(_data: object, fmt: str) -> dict[str, str]:
            from cryod.research.problems import Problem

            raise ExportInvalid(fmt, [Problem("dm.csv[1].USUBJID", "not a subject of DM")])

        monkeypatch.setattr(study_pages, "export_files", invalid)
        r = c.post(f"{PAGE}/export", data={"csrf": token, "site": "", "format": "sdtm"})
        assert r.status_code == 500
        assert "content-disposition" not in r.headers
        assert "The sdtm export failed its checks; nothing was sent or recorded" in r.text
        assert "dm.csv[1].USUBJID" in r.text
    assert exports_audited(followed.engine) == []


def test_without_matplotlib_the_plot_says_so_and_the_tables_show(
    followed: WebSettings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryod.hub import summary_plot

    def missing(*_args: object) -> None:
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(summary_plot, "write_plot", missing)
    with client_as(followed, "mon") as c:
        assert "4 subject(s), 4 procedure(s)" in c.get(PAGE).text
        r = c.get(f"{PAGE}/pain.png")
        assert r.status_code == 503
        assert r.text == "the plot needs matplotlib: pip install 'cryod[report]'"


def test_the_summary_is_reused_for_its_ttl_then_rebuilt(
    followed: WebSettings,  # noqa: F811
    study: Path,  # noqa: F811
) -> None:
    """The page and its plot share one summary for SUMMARY_TTL_S; exports are always built
    afresh. A new assessment shows on the page once the TTL has passed."""
    import dataclasses

    from tests.hub.test_followup_cli import record

    from .conftest import Clock

    clock = Clock()
    settings = dataclasses.replace(followed, mono=clock)
    with client_as(settings, "mon") as c:
        m1 = re.compile(r"\(m1\)</td><td>(\d+)</td>")

        def n_m1() -> int:
            m = m1.search(c.get(PAGE).text)
            assert m is not None
            return int(m.group(1))

        assert n_m1() == 2
        assert record(study, "MN-0003", "m1", "2026-04-21", "--mode", "clinic", "--pain", "3") == 0
        clock.t += study_pages.SUMMARY_TTL_S - 1
        assert n_m1() == 2  # within the TTL: the same summary
        _name, body, _media = download(c, "json", "")
        doc = json.loads(body)
        s3 = next(s for s in doc["subjects"] if s["subject"] == "MN-0003")
        assert '"time_point": "m1"' in json.dumps(s3)  # the export is built afresh
        clock.t += 2
        assert n_m1() == 3
