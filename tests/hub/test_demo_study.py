"""``cryohub demo``: the whole study on one machine, run as a user runs it.

Three rooms (cryosim + cryod each) publish their record to a mosquitto the
demo starts; ``cryohub run`` ingests it; follow-up, a signed day-7 infection,
the summary and every export follow. The test reads what the demo wrote:
the infection in every export and the summary, every room's procedures at
the collector, ``verify --all`` consistent; and no process of the demo left
behind, after a full run and after Ctrl-C.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryod.hub.cli import main

pytestmark = [pytest.mark.needs_mosquitto, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SUBJECTS = ("MN-0001", "MN-0002", "MN-0003", "MN-0004", "SN-0001", "SN-0002")
TERM = "Wound infection at the probe entry site"


def demo_command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cryod.hub.cli", "demo", "--workdir", str(workdir), *extra]


def _web_page(url: str, user: str, password: str, page: str) -> str:
    """``page`` as ``user`` sees it after logging in."""
    import re

    import httpx2 as httpx

    with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as c:
        form = c.get("/login")
        m = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert m is not None, form.text
        c.post("/login", data={"csrf": m.group(1), "username": user, "password": password,
                               "next": "/board"})  # fmt: skip
        r = c.get(page)
        assert r.status_code == 200, r.text
        return r.text


def _web_login(url: str, user: str, password: str) -> tuple[int, str]:
    """Log in to the demo's web app as a browser does; the status and page landed on."""
    import re

    import httpx2 as httpx

    with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as c:
        page = c.get("/login")
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert m is not None, page.text
        r = c.post("/login", data={"csrf": m.group(1), "username": user, "password": password,
                                   "next": "/board"})  # fmt: skip
        return r.status_code, str(r.url)


def processes_under(workdir: Path) -> list[str]:
    """Command lines of running processes that name the demo's work directory."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(workdir) in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}


def test_the_whole_study_on_one_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import httpx2 as httpx

    work = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with log.open("wb") as fh:
        proc = subprocess.Popen(demo_command(work), stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                preexec_fn=_sigint_default)  # fmt: skip
    try:
        # the demo is done and its web app keeps serving until Ctrl-C
        deadline = time.monotonic() + 840
        while "web app still serving at" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()[-6000:]
            assert time.monotonic() < deadline, log.read_text()[-6000:]
            time.sleep(0.2)
        shown = log.read_text()
        url = shown.split("web app still serving at ", 1)[1].split()[0]
        assert httpx.get(f"{url}healthz", timeout=30).text == "ok"
        passwords = json.loads((work / "demo-passwords.json").read_text())
        assert (work / "demo-passwords.json").stat().st_mode & 0o777 == 0o600
        for user in ("demo-monitor", "demo-site-a-nurse"):
            assert user in shown
            assert passwords[user] not in shown  # passwords are in the file, never printed
            assert _web_login(url, user, passwords[user]) == (200, f"{url}board")
        assert _web_login(url, "demo-monitor", "wrong")[0] == 401
        # the study page the demo points at: the summary as of its last simulated day
        study_url = shown.split("the study's page    ", 1)[1].split()[0]
        html = _web_page(url, "demo-monitor", passwords["demo-monitor"], study_url)
        assert "4 subject(s), 4 procedure(s)" in html
        html = _web_page(url, "demo-site-a-nurse", passwords["demo-site-a-nurse"], study_url)
        assert "2 subject(s), 2 procedure(s)" in html
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    shown = log.read_text()
    assert "stopping the web app and the broker" in shown
    assert processes_under(work) == []
    # where everything is; and no subject pseudonym or verbatim term on the terminal
    for where in ("work directory", "collector database", "summaries, exports", "room databases"):
        assert where in shown
    for subject in SUBJECTS:
        assert subject not in shown
    assert TERM not in shown

    mn = work / "out" / "MN-CRYO-EXAMPLE"
    sn = work / "out" / "SN-CRYO-EXAMPLE"
    # every room's procedures reached the collector: each subject has its procedure
    for study_dir, subjects in ((mn, SUBJECTS[:4]), (sn, SUBJECTS[4:])):
        doc = json.loads((study_dir / "json" / f"{study_dir.name}.json").read_text())
        got = {s["subject"]: len(s["procedures"]) for s in doc["subjects"]}
        assert got == dict.fromkeys(subjects, 1), got
    config = work / "cryohub.toml"
    assert main(["verify", "--self", "--config", str(config)]) == 0
    capsys.readouterr()

    # the day-7 infection, recorded after close, in every export ...
    doc = json.loads((mn / "json" / "MN-CRYO-EXAMPLE.json").read_text())
    s1 = next(s for s in doc["subjects"] if s["subject"] == "MN-0001")
    (ae,) = s1["procedures"][0]["later_adverse_events"]
    assert (ae["subcategory"], ae["signed"]) == ("superficial_infection", True)
    onset = ae["onset"]

    events = list(csv.DictReader(io.StringIO(
        files(mn / "csv")["adverse_events_after_close.csv"])))  # fmt: skip
    assert [(e["subject"], e["subcategory"], e["onset"], e["signed"]) for e in events] == [
        ("MN-0001", "superficial_infection", onset, "True")
    ]
    bundle = json.loads(files(mn / "fhir")["MN-CRYO-EXAMPLE.fhir.json"])
    fhir_ae = [e["resource"] for e in bundle["entry"]
               if e["resource"]["resourceType"] == "AdverseEvent"]  # fmt: skip
    assert [(r["event"]["coding"][0]["code"], r["date"]) for r in fhir_ae] == [
        ("superficial_infection", onset)
    ]
    records = list(csv.DictReader(io.StringIO(files(mn / "redcap")["records.csv"])))
    rc_ae = [r for r in records if r["redcap_repeat_instrument"] == "adverse_event"]
    assert [(r["record_id"], r["redcap_event_name"], r["ae_subcategory"]) for r in rc_ae] == [
        ("MN-0001", "d7_arm_1", "superficial_infection")
    ]
    visits = {(r["record_id"], r["redcap_event_name"]): r["visit_status"]
              for r in records if r.get("visit_status")}  # fmt: skip
    assert visits[("MN-0002", "d7_arm_1")] == "missed"
    assert visits[("MN-0003", "m1_arm_1")] == "lost_to_follow_up"
    sd_ae = list(csv.DictReader(io.StringIO(files(mn / "sdtm")["ae.csv"])))
    assert [(a["USUBJID"], a["AEDECOD"], a["AESTDTC"], a["AEREL"]) for a in sd_ae] == [
        ("MN-CRYO-EXAMPLE-MN-0001", "SUPERFICIAL INFECTION", onset, "PROBABLY RELATED")
    ]
    # ... and in the summary, with the missed visits and the subject lost to follow-up
    summary = (mn / "summary.txt").read_text()
    assert "4 subject(s), 4 procedure(s)" in summary
    assert "infection                      grade 2   procedure probably" in summary
    assert "events 1 subjects 1 signed 1" in summary
    assert "Subjects lost to follow-up: 1" in summary
    assert (mn / "pain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the stump study: its own scale, no adverse event
    for fmt in ("json", "csv", "fhir", "redcap", "sdtm"):
        assert any((sn / fmt).iterdir()), fmt
    assert "2 subject(s), 2 procedure(s)" in (sn / "summary.txt").read_text()
    assert not list(csv.DictReader(io.StringIO(files(sn / "sdtm")["ae.csv"])))

    # every room's copy consistent at the collector
    verify = (work / "verify-all.txt").read_text()
    rc = main(["verify", "--all", "--config", str(config)])
    assert capsys.readouterr().out == verify
    assert not [line for line in verify.splitlines() if line.startswith("  entry ")], verify
    assert rc == 0, verify
    for room in ("room-a", "room-b", "room-c"):
        assert f"collector copy consistent with {room} to seq" in verify, verify


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_every_process_of_the_demo(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            demo_command(work),
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            # a shell that starts the suite in the background ignores SIGINT, and the child
            # inherits that: Ctrl-C must reach the demo as it does in a terminal
            preexec_fn=_sigint_default,
        )
    try:
        deadline = time.monotonic() + 240
        # once the rooms run (simulators, daemons, the broker and cryohub run all up)
        while "procedures at" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # mosquitto, cryohub run, cryohub web, 3 x (cryosim, cryod)
        assert len(processes_under(work)) >= 8
        assert any(" web --config " in p for p in processes_under(work))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:  # the demo stops its processes on SIGINT; kill only after
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "interrupted; stopping the rooms, the collector, the web app and the broker" in (
        log.read_text()
    )
    assert processes_under(work) == []


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--speed", "nan"], "--speed nan: give a finite speed-up greater than 0"),
        (["--speed", "0"], "--speed 0: give a finite speed-up greater than 0"),
        (["--speed", "-3"], "--speed -3: give a finite speed-up greater than 0"),
        (["--speed", "inf"], "--speed inf: give a finite speed-up greater than 0"),
        (["--workdir", "{file}"], "--workdir {file}: is not a directory"),
        (["--workdir", "{file}/sub"], "--workdir {file}/sub: cannot be created (Not a directory)"),
        (["--workdir", "/proc/cryohub-demo"], "--workdir /proc/cryohub-demo: cannot be created"),
        (["--workdir", "{full}"], "--workdir {full}: is not empty"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], why: str
) -> None:
    names = {"file": str(tmp_path / "a-file"), "full": str(tmp_path / "full")}
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    argv = [a.format(**names) for a in argv]
    if "--workdir" not in argv:
        argv += ["--workdir", str(tmp_path / "new")]
    assert main(["demo", *argv]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # a refusal is an error: on stderr, as the other commands'
    lines = out.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"cryohub demo: {why.format(**names)}"), lines
    assert not (tmp_path / "new").exists()  # nothing started, nothing made
