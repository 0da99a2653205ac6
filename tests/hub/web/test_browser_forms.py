"""The follow-up forms in a real browser (Playwright driving /usr/bin/chromium), waiting
for what the page shows, never sleeping: a follow-up completed by keyboard alone through a
validation error, an adverse event added by a coordinator and signed by an investigator,
a monitor offered no form; axe-core on every form, errors shown included.

With ``CRYOD_SCREENSHOTS=DIR`` the follow-up form (with its errors beside the fields) is
saved there (``docs/img/web-followup.png`` comes from this run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cryod.hub.web.app import WebSettings, create_app
from cryod.research.profile import load_study_profile
from tests.hub.conftest import NODE, T0

from .live import serving
from .study import PASSWORD, Room
from .test_browser import TIMEOUT_MS, axe_serious, axe_serious_in, browser, log_in, shots

__all__ = ["browser"]  # the fixture, shared with test_browser

PROC = "/procedures/leeds-th2/1"
D7 = f"{PROC}/followup/d7"
IN_WINDOW = (T0 + dt.timedelta(days=7)).date().isoformat()


@pytest.fixture
def base(study_engine: tuple[Engine, dict[str, Room]], tmp_path: Path) -> Iterator[str]:
    settings = WebSettings(
        engine=study_engine[0],
        node=NODE,
        anchor_file=tmp_path / "anchors.jsonl",
        wall=lambda: T0 + dt.timedelta(days=10),
        profiles=(load_study_profile("mortons-neuroma-example"),),
    )
    with serving(create_app(settings)) as url:
        yield url


@contextlib.contextmanager
def session(browser: Any, base: str, user: str, **options: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    try:
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        log_in(page, base, user)
        page.wait_for_url(f"{base}/board")
        yield page
    finally:
        ctx.close()


def tab_to(page: Any, element_id: str, limit: int = 40) -> None:
    """Tab until the element has the focus (the keyboard's only way there)."""
    for _ in range(limit):
        if page.evaluate("() => document.activeElement && document.activeElement.id") == (
            element_id
        ):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} never got the focus by Tab")


def focused(page: Any) -> str:
    return str(page.evaluate("() => document.activeElement.id"))


@pytest.mark.timeout(600)
def test_a_follow_up_is_completed_by_keyboard_alone_through_a_validation_error(
    base: str, browser: Any
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with session(browser, base, "cora") as page:
        # from the due list to the form, by keyboard
        page.goto(f"{base}/followup")
        link = page.get_by_role("link", name="Record MN-0001 d7")
        link.focus()
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{base}{D7}")
        expect(page.get_by_role("heading", name=re.compile("Follow-up: 7 days"))).to_be_visible()

        tab_to(page, "assessed_on")
        page.keyboard.type("2026-13-40")
        page.keyboard.press("Tab")
        assert focused(page) == "status"  # done, as offered
        page.keyboard.press("Tab")
        assert focused(page) == "reason"
        page.keyboard.press("Tab")
        assert focused(page) == "mode"
        page.keyboard.type("Telephone")
        page.keyboard.press("Tab")
        assert focused(page) == "pain_score"
        page.keyboard.type("eleven")
        page.keyboard.press("Enter")

        # refused: each error beside its field, what was typed kept, the focus on the first
        expect(page.get_by_role("alert")).to_contain_text("Not saved: 2 problem(s)")
        date = page.get_by_label("Date of the assessment")
        expect(date).to_have_value("2026-13-40")
        expect(date).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#assessed_on-err")).to_be_visible()
        expect(page.locator("#pain_score-err")).to_be_visible()
        expect(page.locator("#pain_score")).to_have_value("eleven")
        expect(page.locator("#pain_score")).to_have_attribute(
            "aria-describedby", "pain_score-hint pain_score-err"
        )
        expect(page.get_by_label("How", exact=True)).to_have_value("phone")
        expect(date).to_be_focused()
        if (out := shots()) is not None:
            page.screenshot(path=str(out / "web-followup.png"), full_page=True)

        # corrected by keyboard: select what was typed, type over it, Enter
        page.keyboard.press("Control+A")
        page.keyboard.type(IN_WINDOW)
        tab_to(page, "pain_score")
        page.keyboard.press("Control+A")
        page.keyboard.type("3")
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{base}{PROC}?done=assessment")
        expect(page.locator("#flash")).to_have_text("Follow-up time point recorded.")
        row = page.locator("#timeline tr", has_text="7 days (d7)")
        expect(row).to_contain_text("done")
        expect(row).to_contain_text(IN_WINDOW)
        expect(row.get_by_role("link", name="Correct d7")).to_be_visible()

    assert axe_serious_in(browser, base, "cora", [D7, f"{PROC}/followup/m1", PROC]) == []
    # and with the errors shown
    with session(browser, base, "cora", bypass_csp=True) as page:
        page.goto(f"{base}{PROC}/followup/m1")
        page.get_by_label("Date of the assessment").fill("yesterday")
        page.get_by_label(re.compile("^Satisfaction")).select_option("5")
        page.get_by_role("button", name="Save follow-up").click()
        expect(page.locator("#assessed_on-err")).to_be_visible()
        assert axe_serious(page) == []


@pytest.mark.timeout(600)
def test_an_event_added_by_a_coordinator_is_signed_by_an_investigator_and_a_monitor_sees_no_form(
    base: str, browser: Any
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with session(browser, base, "cora") as page:
        page.goto(f"{base}{PROC}")
        expect(page.locator("#events")).to_contain_text("None recorded after close.")
        page.get_by_role("link", name="Add an adverse event").click()
        page.get_by_label(re.compile("^Category")).select_option("pain")
        page.get_by_label("Subcategory").select_option("post_procedural_pain")
        page.get_by_label("Verbatim term").fill('burning <b>toes</b> "><img src=x>')
        page.get_by_label("Onset").fill("2026-03-04")
        page.get_by_label("CTCAE v5 grade").select_option("2")
        page.get_by_label("Serious (required)").select_option("no")
        page.get_by_label("Related to the device").select_option("possibly")
        page.get_by_label("Related to the procedure").select_option("probably")
        page.get_by_label("Outcome").select_option("recovering_resolving")
        page.get_by_label("Action taken").select_option("none")
        page.get_by_label("MHRA Yellow Card reference").fill("not a reference!")
        page.get_by_role("button", name="Add the event").click()
        expect(page.locator("#yellow_card_ref-err")).to_be_visible()
        expect(page.get_by_label("Verbatim term")).to_have_value(
            'burning <b>toes</b> "><img src=x>'
        )
        expect(page.get_by_label("MHRA Yellow Card reference")).to_be_focused()
        page.get_by_label("MHRA Yellow Card reference").fill("")
        page.get_by_role("button", name="Add the event").click()
        expect(page.locator("#flash")).to_contain_text("Adverse event recorded")
        row = page.locator("#events tbody tr").first
        expect(row).to_contain_text('burning <b>toes</b> "><img src=x>')
        expect(row).to_contain_text("not signed")
        expect(page.locator("#events img")).to_have_count(0)
        expect(row.get_by_role("link", name=re.compile("^Sign"))).to_have_count(0)
        event_link = row.get_by_role("link", name=re.compile(r"^Change event \d+$"))
        event_id = int(event_link.inner_text().rsplit(" ", 1)[1])
    sign = f"{PROC}/events/{event_id}/sign"

    with session(browser, base, "ivan") as page:
        page.goto(f"{base}{PROC}")
        page.get_by_role("link", name=f"Sign event {event_id}").click()
        expect(page.locator("#meaning")).to_contain_text(
            f"Signed by ivan for event {event_id} version 1."
        )
        page.get_by_label("Your password").fill("not my password")
        page.get_by_role("button", name="Sign").click()
        expect(page.locator("#password-err")).to_have_text("the password is wrong")
        expect(page.get_by_label("Your password")).to_be_focused()
        page.get_by_label("Your password").fill(PASSWORD)
        page.get_by_role("button", name="Sign").click()
        expect(page.locator("#flash")).to_have_text("Adverse event signed.")
        expect(page.locator("#events tbody tr").first).to_contain_text("signed by ivan")

    with session(browser, base, "mona") as page:
        page.goto(f"{base}{PROC}")
        expect(page.locator("#events tbody tr").first).to_contain_text("signed by ivan")
        assert page.locator("main form").count() == 0
        assert page.locator("main a[href*='/events/'], main a[href*='/followup/']").count() == 0
        for path in (D7, f"{PROC}/events/new", f"{PROC}/events/{event_id}", sign):
            page.goto(f"{base}{path}")
            expect(page.get_by_role("alert")).to_have_text(
                "Your roles do not allow this form for this study and site."
            )

    assert (
        axe_serious_in(browser, base, "cora", [f"{PROC}/events/new", f"{PROC}/events/{event_id}"])
        == []
    )
    assert axe_serious_in(browser, base, "ivan", [sign, PROC]) == []
