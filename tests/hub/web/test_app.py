"""The web app through Starlette's TestClient: headers, login, throttling, CSRF,
sessions, roles per study and site, subject reads audited, hostile text escaped,
procedures, plot, audit and verify."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from cryod.hub.store.models import AuditEntry
from cryod.hub.web import app as web_app
from cryod.hub.web import procedure_pages
from cryod.hub.web.app import CSP, WebSettings, create_app

from .conftest import Clock, csrf_of, login
from .study import HOSTILE, PASSWORD, Room

TEMPLATES = Path(web_app.__file__).parent / "templates"
STATIC = Path(web_app.__file__).parent / "static"


def as_user(settings: WebSettings, user: str) -> TestClient:
    c = TestClient(create_app(settings), base_url="http://testserver")
    r = login(c, user)
    assert r.status_code == 303, r.text
    return c


def audit_entries(engine: Engine, kind: str) -> list[dict[str, object]]:
    with Session(engine) as s:
        rows = s.execute(select(AuditEntry).where(AuditEntry.kind == kind)).scalars()
        return [dict(r.payload) for r in rows]


# ---- headers and pages without inline script ------------------------------------------------
def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/login", "/static/app.css", "/board", "/nowhere"):
        r = client.get(path, follow_redirects=False)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        assert "strict-transport-security" not in r.headers  # not behind TLS
    assert "frame-ancestors 'none'" in CSP
    assert "script-src 'self'" in CSP
    assert "unsafe-inline" not in CSP
    assert "unsafe-eval" not in CSP
    assert client.get("/login").headers["cache-control"] == "no-store"


def test_no_template_or_static_file_has_inline_script_or_style() -> None:
    for f in TEMPLATES.glob("*.html"):
        text = f.read_text()
        for tag in re.findall(r"<script[^>]*>", text):
            assert "src=" in tag, (f.name, tag)
        assert "style=" not in text, f.name
        assert not re.search(r"\son[a-z]+=", text), f.name
        assert "|safe" not in text.replace(" ", ""), f.name
    board_js = (STATIC / "board.js").read_text()
    assert "innerHTML" not in board_js
    assert "eval(" not in board_js


def test_behind_tls_the_cookie_is_secure_host_prefixed_and_hsts_sent(
    settings: WebSettings,
) -> None:
    settings.secure = True
    with TestClient(create_app(settings), base_url="https://testserver") as c:
        r = login(c, "cora")
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("__Host-cryohub=")
        for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
            assert flag in cookie
        assert r.headers["strict-transport-security"] == "max-age=31536000"


# ---- login ----------------------------------------------------------------------------------
def test_login_sets_an_httponly_strict_cookie_and_goes_where_asked(client: TestClient) -> None:
    r = login(client, "cora", next_="/procedures?status=closed")
    assert r.status_code == 303
    assert r.headers["location"] == "/procedures?status=closed"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("cryohub_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    assert client.get("/procedures").status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_login_never_redirects_off_site(client: TestClient, target: str) -> None:
    r = login(client, "cora", next_=target)
    assert r.headers["location"] == "/board"


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(client: TestClient) -> None:
    wrong = login(client, "cora", "not the password!")
    unknown = login(client, "nobody", "not the password!")
    for r in (wrong, unknown):
        assert r.status_code == 401
        assert "Wrong user name or password" in r.text
    assert client.get("/procedures", follow_redirects=False).status_code == 303


def test_pages_need_a_login(client: TestClient) -> None:
    for path in ("/board", "/procedures", "/procedures/leeds-th2/1", "/audit", "/account"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=")
    assert client.get("/board/events").status_code == 401
    assert client.get("/procedures/leeds-th2/1/plot.svg").status_code == 401


def test_failed_logins_throttle_the_account_but_never_lock_it(
    client: TestClient, clock: Clock
) -> None:
    for _ in range(5):
        assert login(client, "cora", "wrong password!!").status_code == 401
    r = login(client, "cora")  # the right password, too soon: not even checked
    assert r.status_code == 429
    assert "wait 1 s" in r.text
    clock.t += 1.01
    assert login(client, "cora").status_code == 303  # never locked
    # the success cleared the account: five more free failures
    for _ in range(5):
        assert login(client, "cora", "wrong password!!").status_code == 401


def test_failed_logins_throttle_the_address_across_accounts(
    client: TestClient, clock: Clock
) -> None:
    for i in range(10):
        assert login(client, f"guess{i}", "wrong password!!").status_code == 401
    assert login(client, "ivan").status_code == 429
    clock.t += 1.01
    assert login(client, "ivan").status_code == 303


# ---- CSRF -------------------------------------------------------------------------------------
def test_every_form_needs_its_csrf_token(client: TestClient, settings: WebSettings) -> None:
    page = client.get("/login")
    token = csrf_of(page.text)
    data = {"username": "cora", "password": PASSWORD, "next": "/board"}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 403
    assert (
        client.post("/login", data={**data, "csrf": "forged"}, follow_redirects=False).status_code
        == 403
    )
    r = client.post(
        "/login",
        data={**data, "csrf": token},
        headers={"origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert login(client, "cora").status_code == 303
    # logged in: logout, password change, user admin all refuse a missing or forged token
    for path, form in (
        ("/logout", {}),
        ("/account/password", {"current": PASSWORD, "new": "x" * 12, "again": "x" * 12}),
        ("/users/ivan/disable", {}),
    ):
        assert client.post(path, data=form, follow_redirects=False).status_code == 403, path
        r = client.post(path, data={**form, "csrf": "forged"}, follow_redirects=False)
        assert r.status_code == 403, path
    assert client.get("/procedures").status_code == 200  # still logged in


# ---- sessions -----------------------------------------------------------------------------
def test_an_idle_session_ends(client: TestClient, clock: Clock) -> None:
    assert login(client, "cora").status_code == 303
    clock.t += 14 * 60
    assert client.get("/procedures").status_code == 200  # renews
    clock.t += 14 * 60
    assert client.get("/procedures").status_code == 200
    clock.t += 15 * 60 + 1
    r = client.get("/procedures", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fprocedures"


def test_logout_and_logout_everywhere(settings: WebSettings) -> None:
    a = as_user(settings, "cora")  # one app, three browsers sharing its session store
    b = TestClient(a.app, base_url="http://testserver")
    other = TestClient(a.app, base_url="http://testserver")
    assert login(b, "cora").status_code == 303
    assert login(other, "ivan").status_code == 303
    page = a.get("/account")
    assert "You have 2 session(s) open." in page.text
    r = a.post(
        "/logout", data={"csrf": csrf_of(page.text), "everywhere": "1"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert b.get("/procedures", follow_redirects=False).status_code == 303
    assert a.get("/procedures", follow_redirects=False).status_code == 303
    assert other.get("/procedures").status_code == 200  # another user's session stays
    page = other.get("/account")
    r = other.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.headers["location"] == "/login?bye=1"
    assert other.get("/procedures", follow_redirects=False).status_code == 303
    for c in (a, b, other):
        c.close()


def test_a_disabled_users_sessions_end_and_a_monitor_cannot_disable(
    settings: WebSettings,
) -> None:
    ada = as_user(settings, "ada")
    app = ada.app
    mona = TestClient(app, base_url="http://testserver")
    cora = TestClient(app, base_url="http://testserver")
    assert login(mona, "mona").status_code == 303
    assert login(cora, "cora").status_code == 303
    token = csrf_of(mona.get("/account").text)
    r = mona.post("/users/cora/disable", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 403  # a monitor changes nothing
    assert mona.get("/users").status_code == 403
    assert cora.get("/procedures").status_code == 200
    page = ada.get("/users")
    assert page.status_code == 200
    assert 'aria-label="disable cora"' in page.text
    r = ada.post("/users/cora/disable", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert cora.get("/procedures", follow_redirects=False).status_code == 303
    assert login(cora, "cora").status_code == 401
    (entry,) = audit_entries(settings.engine, "user_disabled")
    assert entry == {"user": "cora", "by": "ada"}
    for c in (ada, mona, cora):
        c.close()


def test_a_password_change_keeps_errors_beside_fields_and_ends_other_sessions(
    settings: WebSettings,
) -> None:
    a = as_user(settings, "ivan")
    b = TestClient(a.app, base_url="http://testserver")
    assert login(b, "ivan").status_code == 303
    token = csrf_of(a.get("/account").text)
    r = a.post(
        "/account/password",
        data={"csrf": token, "current": PASSWORD, "new": "short", "again": "short"},
    )
    assert r.status_code == 400
    assert re.search(r'id="new-err">a password has at least 12 characters', r.text)
    r = a.post(
        "/account/password",
        data={
            "csrf": token,
            "current": "wrong one!!!!",
            "new": "a new password 1",
            "again": "a new password 1",
        },
    )
    assert r.status_code == 400
    assert 'id="current-err">the current password is wrong' in r.text
    r = a.post(
        "/account/password",
        data={
            "csrf": token,
            "current": PASSWORD,
            "new": "a new password 1",
            "again": "a new password 2",
        },
    )
    assert 'id="again-err">the two new passwords differ' in r.text
    r = a.post(
        "/account/password",
        data={
            "csrf": token,
            "current": PASSWORD,
            "new": "a new password 1",
            "again": "a new password 1",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert b.get("/procedures", follow_redirects=False).status_code == 303  # others ended
    assert a.get("/procedures").status_code == 200  # this one re-issued
    assert login(b, "ivan", "a new password 1").status_code == 303
    assert len(audit_entries(settings.engine, "password_changed")) == 1
    a.close()
    b.close()


# ---- roles per study and site ---------------------------------------------------------------
def rooms_listed(c: TestClient) -> set[tuple[str, str]]:
    html = c.get("/procedures").text
    return set(re.findall(r'href="/procedures/([^/"]+)/(\d+)"', html))


def test_who_sees_which_procedures(settings: WebSettings) -> None:
    expected = {
        "cora": {("leeds-th2", "1"), ("leeds-th2", "2"), ("leeds-th3", "1")},
        "yves": {("york-th1", "1")},  # york, the study only (not OTHER-STUDY)
        "ivan": {("leeds-th2", "1"), ("leeds-th2", "2"), ("leeds-th3", "1"), ("york-th1", "1")},
        "mona": {("leeds-th2", "1"), ("leeds-th2", "2"), ("leeds-th3", "1"), ("york-th1", "1")},
        "ada": set(),  # an admin grant alone gives no subject data
    }
    for user, procs in expected.items():
        c = as_user(settings, user)
        assert rooms_listed(c) == procs, user
        c.close()


def test_a_coordinator_cannot_open_another_sites_procedure(settings: WebSettings) -> None:
    c = as_user(settings, "cora")
    for path in ("/procedures/york-th1/1", "/procedures/york-th1/2", "/procedures/nowhere/1"):
        r = c.get(path)
        assert r.status_code == 404, path
        assert "MN-0101" not in r.text
    assert c.get("/procedures/york-th1/1/plot.svg").status_code == 404
    assert c.get("/audit").status_code == 403
    assert c.get("/audit/verify?room=leeds-th2").status_code == 403
    c.close()
    assert not audit_entries(settings.engine, "subject_read")


def test_every_read_of_a_subjects_page_is_audited_without_the_patient_reference(
    settings: WebSettings, tmp_path: Path
) -> None:
    c = as_user(settings, "cora")
    assert c.get("/procedures/leeds-th2/1").status_code == 200
    assert c.get("/procedures/leeds-th2/1/plot.svg").status_code == 200
    reads = audit_entries(settings.engine, "subject_read")
    assert reads == [
        {"by": "cora", "room": "leeds-th2", "procedure_id": 1, "page": "procedure"},
        {"by": "cora", "room": "leeds-th2", "procedure_id": 1, "page": "plot"},
    ]
    anchors = [json.loads(line) for line in (tmp_path / "anchors.jsonl").read_text().splitlines()]
    with Session(settings.engine) as s:
        head = s.execute(select(AuditEntry).order_by(AuditEntry.seq.desc())).scalars().first()
    assert head is not None
    assert anchors[-1]["seq"] == head.seq
    assert anchors[-1]["hash"] == head.hash
    assert "MN-0001" not in (tmp_path / "anchors.jsonl").read_text()
    c.close()


# ---- hostile text -----------------------------------------------------------------------------
def assert_shown_as_text(html: str, text: str) -> None:
    from markupsafe import escape

    assert str(escape(text)) in html
    if "<" in text:
        assert text not in html


def test_hostile_text_from_a_room_is_stored_and_shown_as_text(settings: WebSettings) -> None:
    c = as_user(settings, "cora")
    html = c.get("/procedures/leeds-th2/1").text
    assert_shown_as_text(html, HOSTILE[0])  # notes
    assert_shown_as_text(html, HOSTILE[1])  # indication_other
    assert_shown_as_text(html, HOSTILE[2])  # alarm message (SQL fragment)
    html2 = c.get("/procedures/leeds-th2/2").text
    assert_shown_as_text(html2, HOSTILE[3])  # very long, non-Latin notes
    assert_shown_as_text(html2, HOSTILE[0])  # adverse event text
    assert "<script>alert" not in html + html2
    assert "<img src=x" not in html + html2
    c.close()


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_typed_into_every_field_comes_back_as_text(
    settings: WebSettings, text: str
) -> None:
    c = TestClient(create_app(settings), base_url="http://testserver")
    r = login(c, text, "wrong password!")
    assert r.status_code == 401
    assert_shown_as_text(r.text, text[:1024])  # the user name field keeps what was typed
    assert login(c, "cora").status_code == 303
    for field in ("study", "site", "room", "status", "from", "to", "page"):
        r = c.get("/procedures", params={field: text})
        assert r.status_code == 200, field
        assert "<script>alert" not in r.text
        assert "<img src=x" not in r.text
    r = c.get("/procedures", params={"from": text})
    assert "a date is YYYY-MM-DD" in r.text
    assert_shown_as_text(r.text, text)
    token = csrf_of(c.get("/account").text)
    r = c.post(
        "/account/password", data={"csrf": token, "current": text, "new": text, "again": text}
    )
    assert r.status_code == 400
    assert "<script>alert" not in r.text
    r = c.get("/procedures/" + text.replace("/", "%2F") + "/1")
    assert r.status_code == 404
    assert "<script>alert" not in r.text
    c.close()


# ---- procedures ---------------------------------------------------------------------------
def test_the_list_filters_by_study_site_room_date_and_status(settings: WebSettings) -> None:
    c = as_user(settings, "ivan")

    def listed(**params: str) -> set[tuple[str, str]]:
        html = c.get("/procedures", params=params).text
        return set(re.findall(r'href="/procedures/([^/"]+)/(\d+)"', html))

    assert listed(site="york") == {("york-th1", "1")}
    assert listed(room="leeds-th3") == {("leeds-th3", "1")}
    assert listed(status="open") == {("leeds-th3", "1")}
    assert listed(status="closed", site="leeds") == {("leeds-th2", "1"), ("leeds-th2", "2")}
    assert listed(**{"from": "2026-03-02", "to": "2026-03-02"}) == {
        ("leeds-th2", "2"),
        ("york-th1", "1"),
    }
    assert listed(study="OTHER-STUDY") == set()  # not his study
    r = c.get("/procedures", params={"status": "maybe"})
    assert "open or closed" in r.text
    c.close()


def test_the_list_is_paged(settings: WebSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procedure_pages, "PAGE_SIZE", 2)
    c = as_user(settings, "ivan")
    first = c.get("/procedures")
    assert "4 procedure(s), page 1 of 2." in first.text
    nxt = re.search(r'href="(\?[^"]*page=2)" rel="next"', first.text)
    assert nxt is not None
    second = c.get("/procedures" + nxt.group(1).replace("&amp;", "&"))
    assert "page 2 of 2" in second.text
    seen = set(re.findall(r'href="/procedures/([^/"]+)/(\d+)"', first.text + second.text))
    assert len(seen) == 4
    c.close()


def test_a_procedure_page_has_details_cycles_alarms_events_and_its_plot(
    settings: WebSettings,
) -> None:
    c = as_user(settings, "cora")
    html = c.get("/procedures/leeds-th2/1").text
    assert "MN-0001" in html  # the pseudonymous reference, on the authenticated page only
    assert "mortons_neuroma" in html
    assert html.count("<td>freeze</td>") == 2
    assert html.count("<td>thaw</td>") == 2
    assert "TIP_STALE" in html
    assert 'src="/procedures/leeds-th2/1/plot.svg"' in html
    assert "Not yet recorded by the room." in html  # adverse events NULL
    assert "bruising" in c.get("/procedures/leeds-th2/2").text
    open_page = c.get("/procedures/leeds-th3/1").text
    assert "open" in open_page
    assert "No cycle." in open_page
    c.close()


def test_the_plot_is_decimated_shaded_and_cached(
    settings: WebSettings, study_engine: tuple[Engine, dict[str, Room]]
) -> None:
    c = as_user(settings, "cora")
    r = c.get("/procedures/leeds-th2/1/plot.svg")
    assert r.headers["content-type"].startswith("image/svg+xml")
    svg = r.text
    assert svg.count("<path") == 2  # one per probe
    assert svg.count("#cfe3ff") == 2  # a freeze per probe
    assert svg.count("#ffe1c4") == 2  # a thaw per probe
    paths = re.findall(r'<path d="([^"]+)"', svg)
    assert paths[0].count("M") == 1  # probe 1: no gap
    assert paths[1].count("M") == 2  # probe 2: the invalid reading is a gap
    assert c.get("/procedures/leeds-th2/1/plot.svg").text == svg
    assert len(c.app.state.index.procedures(lambda study, site: True)) == 5
    c.close()


def test_the_index_picks_up_new_rows_and_redactions_within_its_refresh_interval(
    settings: WebSettings, study_engine: tuple[Engine, dict[str, Room]], clock: Clock
) -> None:
    from .study import STUDY, send

    engine, rooms = study_engine
    c = as_user(settings, "cora")
    assert ("leeds-th3", "2") not in rooms_listed(c)
    room = rooms["leeds2"]
    send(
        engine,
        room,
        room.procedure(
            2, study=STUDY, patient_ref="MN-0004", opened=room.now + dt.timedelta(days=3)
        ),
    )
    assert ("leeds-th3", "2") not in rooms_listed(c)  # looked less than refresh_s ago
    clock.t += settings.refresh_s
    assert ("leeds-th3", "2") in rooms_listed(c)
    doc = room._entry(
        "row",
        {
            "table": "procedures",
            "key": {"id": 2},
            "op": "redact",
            "digest": "0" * 64,
            "encoding": "cryod.row/1",
        },
    )
    send(engine, room, doc)
    clock.t += settings.refresh_s
    assert ("leeds-th3", "2") not in rooms_listed(c)
    c.close()


# ---- audit ----------------------------------------------------------------------------------
def test_a_monitor_reads_the_audit_and_verifies_a_rooms_copy(settings: WebSettings) -> None:
    c = as_user(settings, "mona")
    html = c.get("/audit").text
    assert "room_registered" in html
    assert "user_added" in html
    assert "by" not in re.findall(r"<td>(by)</td>", html)
    assert re.search(r"<td>tester</td><td>user_added</td>", html)
    r = c.get("/audit/verify", params={"room": "leeds-th2"})
    assert r.status_code == 200
    assert re.search(r"collector copy consistent with leeds-th2 to seq \d+", r.text)
    assert c.get("/audit/verify", params={"room": "nowhere"}).status_code == 404
    c.close()


# ---- follow-up ------------------------------------------------------------------------------
def test_the_follow_up_due_list_is_scoped_to_the_viewers_studies_and_sites(
    settings: WebSettings,
) -> None:
    from cryod.research.profile import load_study_profile

    settings.profiles = (load_study_profile("mortons-neuroma-example"),)
    rows = re.compile(r"<tr><td>(due|overdue)</td><td>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td>")
    expected = {
        "cora": {
            ("due", "leeds", "MN-0001"),
            ("due", "leeds", "MN-0002"),
            ("due", "leeds", "MN-0003"),
        },
        "yves": {("due", "york", "MN-0101")},
        "ivan": {
            ("due", "leeds", "MN-0001"),
            ("due", "leeds", "MN-0002"),
            ("due", "leeds", "MN-0003"),
            ("due", "york", "MN-0101"),
        },
        "ada": set(),
    }
    for user, want in expected.items():
        c = as_user(settings, user)
        html = c.get("/followup").text
        assert set(rows.findall(html)) == want, user
        c.close()
