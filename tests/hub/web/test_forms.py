"""The follow-up forms (TestClient), on SQLite and PostgreSQL: validation on the server,
each error beside its field, what was typed kept, roles, CSRF, hostile text as text."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from markupsafe import escape
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from cryod.hub.store.models import AuditEntry
from cryod.hub.web.app import WebSettings, create_app
from tests.hub.conftest import T0

from .conftest import csrf_of, login

PROC = "/procedures/leeds-th2/1"
D7 = f"{PROC}/followup/d7"
NEW_EVENT = f"{PROC}/events/new"
IN_WINDOW = (T0 + dt.timedelta(days=7)).date().isoformat()

#: hostile text typed into every text field: markup, an attribute break-out, SQL,
#: non-Latin script, and 5,000 characters
TYPED = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'; DROP TABLE followup_events; --",
    "Ωμέγα 神経腫 نَص",
    "ж" * 5000,
)


@pytest.fixture
def forms(study_settings: WebSettings) -> WebSettings:
    return study_settings


def as_user(settings: WebSettings, user: str, password: str | None = None) -> TestClient:
    c = TestClient(create_app(settings), base_url="http://testserver")
    r = login(c, user) if password is None else login(c, user, password)
    assert r.status_code == 303, r.text
    return c


def post(c: TestClient, url: str, data: dict[str, Any]) -> Any:
    token = csrf_of(c.get(url).text)
    return c.post(url, data={"csrf": token, **data}, follow_redirects=False)


def entries(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with Session(engine) as s:
        q = select(AuditEntry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)
        rows = s.execute(q).scalars()
        return [dict(r.payload) for r in rows]


def error_beside(html: str, field: str) -> str:
    """The error shown beside ``field``, which the field names in aria-describedby."""
    m = re.search(rf'<span class="field-error" id="{field}-err">([^<]*)</span>', html)
    assert m is not None, f"no error beside {field}"
    tag = re.search(rf'<(?:input|select|textarea) id="{field}"[^>]*>', html)
    assert tag is not None, f"no field {field}"
    assert f"{field}-err" in tag.group(0), tag.group(0)
    assert 'aria-invalid="true"' in tag.group(0), tag.group(0)
    return m.group(1)


def value_of(html: str, field: str) -> str:
    tag = re.search(rf'<input id="{field}" name="{field}" [^>]*value="([^"]*)"', html)
    if tag is not None:
        return tag.group(1)
    area = re.search(rf'<textarea id="{field}" name="{field}"[^>]*>([^<]*)</textarea>', html)
    assert area is not None, f"no field {field}"
    return area.group(1)


def shown_as_text(html: str, text: str) -> None:
    assert str(escape(text)) in html
    if "<" in text or '"' in text:
        assert text not in html


# ---- the follow-up assessment ----------------------------------------------------------------
def test_an_assessment_with_errors_is_shown_back_beside_each_field_then_recorded(
    forms: WebSettings,
) -> None:
    c = as_user(forms, "cora")
    page = c.get(D7)
    assert page.status_code == 200
    assert '<label for="pain_score">' in page.text
    reads = entries(forms.engine, "subject_read")
    assert reads[-1] == {
        "by": "cora",
        "room": "leeds-th2",
        "procedure_id": 1,
        "page": "followup_form",
    }
    bad = post(
        c,
        D7,
        {
            "assessed_on": "2026-13-40",
            "status": "done",
            "pain_score": "eleven",
            "qol_total": "0.7",
            "satisfaction": "9",
        },
    )
    assert bad.status_code == 400
    assert "date" in error_beside(bad.text, "assessed_on")
    assert error_beside(bad.text, "pain_score")
    assert error_beside(bad.text, "satisfaction")
    assert value_of(bad.text, "assessed_on") == "2026-13-40"
    assert value_of(bad.text, "pain_score") == "eleven"
    assert value_of(bad.text, "qol_total") == "0.7"
    assert entries(forms.engine, "followup_recorded") == []

    ok = post(
        c,
        D7,
        {"assessed_on": IN_WINDOW, "status": "done", "mode": "phone", "pain_score": "3"},
    )
    assert ok.status_code == 303
    assert ok.headers["location"] == f"{PROC}?done=assessment"
    shown = c.get(ok.headers["location"]).text
    assert "Follow-up time point recorded." in shown
    row = re.search(r"<tr><td>7 days \(d7\)</td>.*?</tr>", shown)
    assert row is not None
    assert ">done<" in row.group(0)
    assert IN_WINDOW in row.group(0)
    assert ">3.0<" in row.group(0)
    (entry,) = entries(forms.engine, "followup_recorded")
    assert entry["by"] == "cora"
    assert entry["time_point"] == "d7"
    c.close()


def test_a_recorded_time_point_is_corrected_only_with_a_reason(forms: WebSettings) -> None:
    c = as_user(forms, "cora")
    assert post(
        c, D7, {"assessed_on": IN_WINDOW, "status": "done", "mode": "clinic", "pain_score": "3"}
    ).is_redirect
    again = post(
        c, D7, {"assessed_on": IN_WINDOW, "status": "done", "mode": "clinic", "pain_score": "2"}
    )
    assert again.status_code == 400
    assert "reason" in error_beside(again.text, "correction")
    assert value_of(again.text, "pain_score") == "2"
    fixed = post(
        c,
        D7,
        {
            "assessed_on": IN_WINDOW,
            "status": "done",
            "mode": "clinic",
            "pain_score": "2",
            "correction": "typo",
        },
    )
    assert fixed.status_code == 303
    (entry,) = entries(forms.engine, "followup_corrected")
    assert entry["reason"] == "typo"
    assert entry["fields"] == ["pain_score"]
    c.close()


@pytest.mark.parametrize("typed", TYPED, ids=["script", "attr", "sql", "non-latin", "5000"])
def test_hostile_text_in_the_assessments_text_fields_is_kept_as_text(
    forms: WebSettings, typed: str
) -> None:
    c = as_user(forms, "cora")
    numbers = ("assessed_on", "pain_score", "qol_total", "function_score")
    r = post(c, D7, {"status": "missed", "reason": typed, **dict.fromkeys(numbers, typed)})
    assert r.status_code == 400  # not a date, nor numbers: refused beside each, kept as text
    for field in numbers:
        assert error_beside(r.text, field)
        assert value_of(r.text, field) == str(escape(typed))
    shown_as_text(r.text, typed)
    r = post(c, D7, {"assessed_on": IN_WINDOW, "status": "missed", "reason": typed})
    if len(typed) > 500:
        assert r.status_code == 400
        assert "500" in error_beside(r.text, "reason")
        assert value_of(r.text, "reason") == str(escape(typed))
        return
    assert r.status_code == 303, r.text
    shown = c.get(D7).text  # the form of a recorded time point shows what was stored
    assert value_of(shown, "reason") == str(escape(typed))
    shown_as_text(shown, typed)
    # the correction's reason too
    r = post(
        c, D7, {"assessed_on": IN_WINDOW, "status": "missed", "reason": "x", "correction": typed}
    )
    assert r.status_code == 303, r.text
    (entry,) = entries(forms.engine, "followup_corrected")
    assert entry["reason"] == typed
    c.close()


# ---- adverse events --------------------------------------------------------------------------
EVENT = {
    "category": "pain",
    "subcategory": "post_procedural_pain",
    "verbatim_term": "tingling of the toes",
    "onset": (T0 + dt.timedelta(days=3)).date().isoformat(),
    "ctcae_grade": "1",
    "serious": "no",
    "relatedness_device": "possibly",
    "relatedness_procedure": "probably",
    "outcome": "recovering_resolving",
    "action_taken": "none",
}


def event_id_of(location: str, html: str) -> int:
    ids = re.findall(r"/events/(\d+)/sign", html) or re.findall(r"/events/(\d+)\"", html)
    assert ids, "no event listed"
    return int(ids[-1])


def test_an_event_with_errors_is_shown_back_then_added_signed_and_changed(
    forms: WebSettings,
) -> None:
    cora = as_user(forms, "cora")
    assert cora.get(NEW_EVENT).status_code == 200
    bad = post(
        cora,
        NEW_EVENT,
        {**EVENT, "verbatim_term": "", "ctcae_grade": "7", "onset": "next tuesday"},
    )
    assert bad.status_code == 400
    assert error_beside(bad.text, "verbatim_term")
    assert error_beside(bad.text, "ctcae_grade")
    assert error_beside(bad.text, "onset")
    assert value_of(bad.text, "onset") == "next tuesday"
    assert 'value="pain" selected' in bad.text

    ok = post(cora, NEW_EVENT, {**EVENT, "seriousness_criteria": []})
    assert ok.status_code == 303
    assert ok.headers["location"] == f"{PROC}?done=event"
    page = cora.get(PROC).text
    assert "tingling of the toes" in page
    assert "not signed" in page
    (recorded,) = entries(forms.engine, "event_recorded")
    eid = recorded["id"]
    assert f"/events/{eid}/sign" not in page  # a coordinator is offered no signature
    assert cora.get(f"{PROC}/events/{eid}/sign").status_code == 403
    assert post(cora, f"{PROC}/events/{eid}", {}).status_code in (400, 303)

    ivan = as_user(forms, "ivan")
    sign = f"{PROC}/events/{eid}/sign"
    form = ivan.get(sign)
    assert form.status_code == 200
    assert f"Signed by ivan for event {eid} version 1." in form.text
    version = re.search(r'name="version" value="(\d+)"', form.text)
    assert version is not None
    wrong = ivan.post(
        sign,
        data={"csrf": csrf_of(form.text), "version": version.group(1), "password": "not it"},
        follow_redirects=False,
    )
    assert wrong.status_code == 401
    assert error_beside(wrong.text, "password") == "the password is wrong"
    assert entries(forms.engine, "event_signed") == []
    right = post(ivan, sign, {"version": version.group(1), "password": "correct horse battery"})
    assert right.status_code == 303
    assert right.headers["location"] == f"{PROC}?done=signed"
    assert "signed by ivan" in ivan.get(PROC).text
    (signed,) = entries(forms.engine, "event_signed")
    assert signed["by"] == "ivan"
    assert signed["event"] == eid

    # a signed event changes only with a reason, and is then unsigned
    change = f"{PROC}/events/{eid}"
    no_reason = post(cora, change, {**EVENT, "ctcae_grade": "2"})
    assert no_reason.status_code == 400
    assert "reason" in error_beside(no_reason.text, "reason")
    assert 'value="2" selected' in no_reason.text
    changed = post(cora, change, {**EVENT, "ctcae_grade": "2", "reason": "regraded"})
    assert changed.status_code == 303
    assert "changed since signed" in cora.get(PROC).text
    (entry,) = entries(forms.engine, "event_changed")
    assert entry["reason"] == "regraded"
    assert entry["was_signed"] is True
    cora.close()
    ivan.close()


def test_wrong_signing_passwords_are_throttled(forms: WebSettings) -> None:
    cora = as_user(forms, "cora")
    assert post(cora, NEW_EVENT, EVENT).status_code == 303
    (recorded,) = entries(forms.engine, "event_recorded")
    sign = f"{PROC}/events/{recorded['id']}/sign"
    ivan = as_user(forms, "ivan")
    statuses = [
        post(ivan, sign, {"version": "1", "password": f"wrong {i}"}).status_code for i in range(8)
    ]
    assert statuses[0] == 401, statuses
    assert statuses[-1] == 429, statuses
    r = post(ivan, sign, {"version": "1", "password": "correct horse battery"})
    assert r.status_code == 429  # the right password waits too
    assert "wait" in error_beside(r.text, "password")
    forms.mono.t += 3600  # type: ignore[attr-defined]
    assert post(ivan, sign, {"version": "1", "password": "correct horse battery"}).is_redirect
    cora.close()
    ivan.close()


def test_a_signature_is_refused_when_the_event_changed_after_it_was_read(
    forms: WebSettings,
) -> None:
    cora = as_user(forms, "cora")
    assert post(cora, NEW_EVENT, EVENT).status_code == 303
    (recorded,) = entries(forms.engine, "event_recorded")
    sign = f"{PROC}/events/{recorded['id']}/sign"
    ivan = as_user(forms, "ivan")
    token = csrf_of(ivan.get(sign).text)  # ivan reads version 1
    changed = post(cora, f"{PROC}/events/{recorded['id']}", {**EVENT, "ctcae_grade": "3"})
    assert changed.status_code == 303
    late = ivan.post(
        sign,
        data={"csrf": token, "version": "1", "password": "correct horse battery"},
        follow_redirects=False,
    )
    assert late.status_code == 409
    assert "changed while you were reading it" in late.text
    assert "version 2" in late.text
    assert entries(forms.engine, "event_signed") == []
    cora.close()
    ivan.close()


@pytest.mark.parametrize("typed", TYPED, ids=["script", "attr", "sql", "non-latin", "5000"])
def test_hostile_text_in_the_events_text_fields_is_stored_or_refused_as_text(
    forms: WebSettings, typed: str
) -> None:
    cora = as_user(forms, "cora")
    r = post(
        cora,
        NEW_EVENT,
        {
            **EVENT,
            "verbatim_term": typed,
            "onset": typed,
            "resolution": typed,
            "further_intervention_date": typed,
            "yellow_card_ref": typed,
        },
    )
    # not dates nor a Yellow Card reference: refused beside each, all typed kept as text
    assert r.status_code == 400
    for field in ("onset", "resolution", "further_intervention_date", "yellow_card_ref"):
        assert error_beside(r.text, field)
        assert value_of(r.text, field) == str(escape(typed))
    assert value_of(r.text, "verbatim_term") == str(escape(typed))
    shown_as_text(r.text, typed)
    r = post(cora, NEW_EVENT, {**EVENT, "verbatim_term": typed})
    if len(typed) > 500:
        assert r.status_code == 400
        assert "500" in error_beside(r.text, "verbatim_term")
        return
    assert r.status_code == 303
    page = cora.get(PROC).text
    shown_as_text(page, typed)
    (recorded,) = entries(forms.engine, "event_recorded")
    ivan = as_user(forms, "ivan")
    shown_as_text(ivan.get(f"{PROC}/events/{recorded['id']}/sign").text, typed)
    cora.close()
    ivan.close()


# ---- who may ---------------------------------------------------------------------------------
def test_a_monitor_opens_no_form_and_sees_no_link(forms: WebSettings) -> None:
    cora = as_user(forms, "cora")
    assert post(cora, NEW_EVENT, EVENT).status_code == 303
    (recorded,) = entries(forms.engine, "event_recorded")
    eid = recorded["id"]
    token = csrf_of(cora.get(PROC).text)
    mona = as_user(forms, "mona")
    page = mona.get(PROC)
    assert page.status_code == 200
    assert "tingling of the toes" in page.text
    assert "/followup/d7" not in page.text
    assert "/events/" not in page.text
    assert "/followup/" not in mona.get("/followup").text.split("<tbody>")[1]
    mona_token = csrf_of(page.text)
    for url in (D7, NEW_EVENT, f"{PROC}/events/{eid}", f"{PROC}/events/{eid}/sign"):
        assert mona.get(url).status_code == 403, url
        r = mona.post(
            url,
            data={"csrf": mona_token, **EVENT, "password": "correct horse battery"},
            follow_redirects=False,
        )
        assert r.status_code == 403, url
    # another site's coordinator: the procedure is not theirs to see at all
    yves = as_user(forms, "yves")
    assert yves.get(D7).status_code == 404
    # and no form without the session's CSRF token (nor with another session's)
    assert cora.post(D7, data={"assessed_on": IN_WINDOW, "status": "done"}).status_code == 403
    assert (
        cora.post(
            D7, data={"csrf": mona_token, "assessed_on": IN_WINDOW, "status": "done"}
        ).status_code
        == 403
    )
    assert token
    assert entries(forms.engine, "event_signed") == []
    assert entries(forms.engine, "followup_recorded") == []
    for c in (cora, mona, yves):
        c.close()


def test_the_due_list_links_to_the_form_for_those_who_record(forms: WebSettings) -> None:
    cora = as_user(forms, "cora")
    html = cora.get("/followup").text
    assert f'href="{D7}"' in html
    r = cora.get(D7)
    assert "7 days" in r.text
    assert cora.get(f"{PROC}/followup/nope").status_code == 404
    assert cora.get(f"{PROC}/followup/baseline").status_code == 404
    anon = TestClient(create_app(forms), base_url="http://testserver")
    assert anon.get(D7, follow_redirects=False).status_code == 303
    cora.close()


def test_a_time_point_outside_its_window_is_recorded_and_called_a_deviation(
    forms: WebSettings,
) -> None:
    c = as_user(forms, "cora")
    early = (T0 + dt.timedelta(days=3)).date().isoformat()  # the d7 window opens on day 5
    r = post(c, D7, {"assessed_on": early, "status": "done", "mode": "clinic", "pain_score": "1"})
    assert r.status_code == 303
    assert r.headers["location"] == f"{PROC}?done=assessment_late"
    assert "outside its window: a protocol deviation" in c.get(r.headers["location"]).text
    # the page says only what the app wrote, never the query's text
    assert "<b>" not in c.get(f"{PROC}?done=<b>x</b>").text.split("<main")[1]
    c.close()


def test_an_error_of_a_field_the_form_does_not_show_goes_to_its_summary() -> None:
    from cryod.hub.web.followup_form import placed as _placed

    placed = _placed(
        {"pain_score": "too high", "function_score": "no such", "": "x"}, ["pain_score"]
    )
    assert placed == {"pain_score": "too high", "": "function score: no such; x"}
