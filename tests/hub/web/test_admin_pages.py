"""The admins' pages (TestClient), on SQLite and PostgreSQL: adding a user (validation on
the server, each error beside its field, what was typed kept, audited, CSRF, roles,
hostile text as text) and the read-only study profiles."""

from __future__ import annotations

import re
from typing import Any

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from cryod.hub.access import Grant, Role
from cryod.hub.admin import password_digest
from cryod.hub.web.app import WebSettings, create_app

from .conftest import csrf_of, login
from .study import STUDY, add_user
from .test_forms import as_user, entries, error_beside, shown_as_text, value_of

NEW_PASSWORD = "a new user's first password"
GOOD: dict[str, str] = {
    "name": "nina",
    "role": "coordinator",
    "study": STUDY,
    "site": "leeds",
    "password": NEW_PASSWORD,
    "again": NEW_PASSWORD,
}


@pytest.fixture
def admin_app(study_settings: WebSettings) -> WebSettings:
    return study_settings


def add(c: TestClient, data: dict[str, Any], **headers: str) -> Any:
    token = csrf_of(c.get("/users").text)
    return c.post("/users", data={"csrf": token, **data}, headers=headers, follow_redirects=False)


def selected_of(html: str, field: str) -> str:
    """The value of the option selected in the select ``field`` (what was chosen, kept)."""
    select = re.search(rf'<select id="{field}" name="{field}".*?</select>', html, re.S)
    assert select is not None, f"no select {field}"
    chosen = re.findall(r'<option value="([^"]*)" selected>', select.group(0))
    assert len(chosen) == 1, chosen
    return str(chosen[0])


def added(settings: WebSettings) -> list[str]:
    return [e["user"] for e in entries(settings.engine, "user_added")]


def test_an_admin_adds_a_user_who_then_logs_in(admin_app: WebSettings) -> None:
    ada = as_user(admin_app, "ada")
    page = ada.get("/users")
    assert page.status_code == 200
    assert 'id="add-user-form"' in page.text
    r = add(ada, GOOD)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/users?done=added"
    page = ada.get(r.headers["location"])
    assert "User added." in page.text
    assert "<td>nina</td><td>coordinator (study MN-CRYO-EXAMPLE, site leeds)</td>" in page.text
    assert NEW_PASSWORD not in page.text
    nina = TestClient(create_app(admin_app), base_url="http://testserver")
    assert login(nina, "nina", NEW_PASSWORD).status_code == 303
    assert nina.get("/followup").status_code == 200
    entry = entries(admin_app.engine, "user_added")[-1]
    assert entry["user"] == "nina"
    assert entry["by"] == "ada"
    assert entry["bootstrap"] is False
    assert entry["grants"] == [{"role": "coordinator", "study": STUDY, "site": "leeds"}]
    assert len(entry["password"]) == 64
    assert entry["password"] != password_digest(NEW_PASSWORD)
    # the change is anchored as every other
    assert admin_app.anchor_file.read_text(encoding="utf-8").strip() != ""
    for c in (ada, nina):
        c.close()


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"name": "cora"}, "name", "user &#39;cora&#39; exists"),
        ({"name": "Nina Smith"}, "name", "2-64 characters"),
        ({"name": "bootstrap"}, "name", "reserved"),
        ({"password": "short", "again": "short"}, "password", "at least 12 characters"),
        ({"again": NEW_PASSWORD + "!"}, "again", "the two passwords differ"),
        ({"study": "NO-SUCH-STUDY"}, "study", "not a configured study (MN-CRYO-EXAMPLE)"),
        ({"role": "root"}, "role", "choose a role"),
        ({"role": ""}, "role", "choose a role"),
        ({"site": "le eds"}, "site", "letters, digits"),
    ],
)
def test_each_refusal_is_shown_beside_its_field_with_what_was_typed_kept(
    admin_app: WebSettings, change: dict[str, str], field: str, says: str
) -> None:
    ada = as_user(admin_app, "ada")
    before = added(admin_app)
    typed = {**GOOD, **change}
    r = add(ada, typed)
    assert r.status_code == 400, r.text
    assert says in error_beside(r.text, field)
    for kept in ("name", "site"):
        assert value_of(r.text, kept) == str(escape(typed[kept]))
    assert selected_of(r.text, "role") == str(escape(typed["role"]))
    assert selected_of(r.text, "study") == str(escape(typed["study"]))
    assert NEW_PASSWORD not in r.text  # the passwords are never sent back
    assert "Not saved" in r.text
    assert added(admin_app) == before
    ada.close()


def test_an_admin_scoped_to_a_study_grants_only_within_it(admin_app: WebSettings) -> None:
    add_user(admin_app.engine, "sam", Grant(Role.ADMIN, STUDY, None))
    sam = as_user(admin_app, "sam")
    r = add(sam, {**GOOD, "study": ""})  # every study: beyond sam's scope (admin.add_user)
    assert r.status_code == 400
    assert "sam may not grant coordinator (site leeds)" in error_beside(r.text, "role")
    assert "nina" not in added(admin_app)
    assert add(sam, GOOD).status_code == 303
    assert "nina" in added(admin_app)
    sam.close()


@pytest.mark.parametrize("user", ["cora", "mona"])
def test_a_non_admin_gets_403_on_every_admin_page(admin_app: WebSettings, user: str) -> None:
    c = as_user(admin_app, user)
    assert c.get("/users").status_code == 403
    assert c.get("/admin/studies").status_code == 403
    token = csrf_of(c.get("/account").text)  # a valid token: the role is what refuses
    r = c.post("/users", data={"csrf": token, **GOOD}, follow_redirects=False)
    assert r.status_code == 403
    assert "nina" not in added(admin_app)
    assert 'href="/users"' not in c.get("/account").text
    c.close()


def test_a_user_is_added_only_with_the_forms_csrf_token_from_this_origin(
    admin_app: WebSettings,
) -> None:
    ada = as_user(admin_app, "ada")
    assert ada.post("/users", data=GOOD, follow_redirects=False).status_code == 403
    r = ada.post("/users", data={**GOOD, "csrf": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    assert add(ada, GOOD, origin="http://evil.example").status_code == 403
    assert "nina" not in added(admin_app)
    assert add(ada, GOOD).status_code == 303  # the same form, with its token: added
    ada.close()


@pytest.mark.parametrize(
    "name",
    [
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "x'; DROP TABLE users; --",
        "Ωμέγα",
        "n" * 2000,
    ],
)
def test_hostile_names_are_refused_and_shown_as_text(admin_app: WebSettings, name: str) -> None:
    ada = as_user(admin_app, "ada")
    r = add(ada, {**GOOD, "name": name, "site": name[:200]})
    assert r.status_code == 400
    assert "2-64 characters" in error_beside(r.text, "name")
    assert "letters, digits" in error_beside(r.text, "site")
    shown_as_text(r.text, name[:70])
    assert value_of(r.text, "name") == str(escape(name[:1024]))
    assert name not in added(admin_app)
    assert "<script>alert(1)</script>" not in r.text
    ada.close()


def test_the_study_profiles_page_lists_each_profile_read_only(admin_app: WebSettings) -> None:
    profile = admin_app.profiles[0]
    ada = as_user(admin_app, "ada")
    page = ada.get("/admin/studies")
    assert page.status_code == 200
    row = (
        f"<tr><td>MN-CRYO-EXAMPLE</td><td>1.0.0</td><td>{escape(profile.study.title)}</td>"
        f"<td>https://www.isrctn.com ISRCTN00000000</td><td><code>{profile.content_hash}</code>"
    )
    assert row in page.text
    assert "[studies] profiles_dir" in page.text
    assert "SIGHUP" in page.text
    assert "<form" not in page.text.split('<main id="main">', 1)[1]  # nothing to change here
    ada.close()


def test_the_study_profiles_page_says_when_none_is_configured(admin_app: WebSettings) -> None:
    admin_app.profiles = ()
    ada = as_user(admin_app, "ada")
    page = ada.get("/admin/studies")
    assert "No study profile is configured." in page.text
    r = add(ada, GOOD)  # no study to scope to
    assert "no study profiles configured" in error_beside(r.text, "study")
    ada.close()
