"""The web app in a real browser: Playwright driving Debian's Chromium
(``/usr/bin/chromium``; never a downloaded browser), waiting for what the page
shows, never sleeping. axe-core (npm ``axe-core`` 4.14.1, vendored in
``data/``) runs in the same browser on every page: no serious or critical
violation.

With ``CRYOD_SCREENSHOTS=DIR`` the board and a procedure page are saved there
(``docs/img/web-board.png``, ``docs/img/web-procedure.png`` come from this run).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cryod.hub.web.app import create_app
from tests.conftest import IN_CI
from tests.mqtt.broker import Mosquitto, running_broker

from .live import RoomPublisher, serving
from .study import PASSWORD, Room
from .test_live import live_settings

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).parent / "data" / "axe.min.js"
TIMEOUT_MS = 30_000


def require_chromium() -> None:
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail("/usr/bin/chromium is required in CI (CI=true): apt-get install chromium")
        pytest.skip("/usr/bin/chromium not installed (apt-get install chromium)")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with running_broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield b
        finally:
            b.close()


def shots() -> Path | None:
    where = os.environ.get("CRYOD_SCREENSHOTS")
    return Path(where) if where else None


def log_in(page: Any, base: str, user: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def axe_serious(context_page: Any) -> list[str]:
    """Serious and critical axe-core violations on the page (injected in the same browser)."""
    context_page.add_script_tag(path=str(AXE))
    result = context_page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))"
    )
    return [
        f"{v['id']} ({v['impact']}, {v['nodes']})"
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.timeout(600)
def test_in_a_browser_login_throttle_board_procedure_roles_logout(
    study_engine: tuple[Engine, dict[str, Room]],
    tmp_path: Path,
    broker: Mosquitto,
    browser: Any,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    settings = live_settings(study_engine[0], tmp_path, broker)
    room = RoomPublisher(broker.port, "leeds", "c1")
    york = RoomPublisher(broker.port, "york", "c1")
    out = shots()
    contexts = []
    try:
        with serving(create_app(settings)) as base:
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            contexts.append(ctx)
            page = ctx.new_page()
            page.set_default_timeout(TIMEOUT_MS)

            # a page needs a login; a wrong password is refused
            page.goto(f"{base}/board")
            expect(page).to_have_url(re.compile(r"/login\?next=%2Fboard$"))
            log_in(page, base, "cora", "not her password")
            expect(page.locator("#login-error")).to_have_text(
                "Wrong user name or password (or the account is disabled)."
            )
            expect(page.get_by_label("User name")).to_have_value("cora")  # input kept
            # throttling: five failures on yves's account, then even his password waits
            for _ in range(5):
                log_in(page, base, "yves", "not his password")
                expect(page.locator("#login-error")).to_contain_text("Wrong user name")
            log_in(page, base, "yves")
            expect(page.locator("#login-error")).to_contain_text("Too many failed logins: wait")

            # the board, live: a tip falling while the room publishes; logged in by
            # keyboard alone (labelled fields in order, Enter submits)
            page.goto(f"{base}/login")
            page.keyboard.press("Tab")
            expect(page.get_by_label("User name")).to_be_focused()
            page.keyboard.type("cora")
            page.keyboard.press("Tab")
            expect(page.get_by_label("Password")).to_be_focused()
            page.keyboard.type(PASSWORD)
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{base}/board")
            room.state("freeze", 90.0, probe=1, cycle=1)
            room.alarms(
                ("high", "TIP_STALE", "probe 2 tip temperature stale"),
                ("medium", "SUPPLY_LOW", "supply pressure low"),
            )
            york.telemetry({1: 1.0})
            leeds = page.locator('section.room[data-key="leeds/c1"]')
            for tip in (12.0, -8.5, -31.0, -64.5, -86.0):
                room.telemetry({1: tip, 2: None, 3: tip / 2})
                expect(leeds.locator('li[data-probe="1"] .tip')).to_have_text(f"{tip:.1f} °C")
            expect(leeds.locator(".link")).to_have_text("live")
            expect(leeds.locator('li[data-probe="2"] .tip')).to_have_text("stale")
            expect(leeds.locator(".alarms li").first).to_have_class("prio-high")
            expect(leeds.locator(".alarms li").nth(1)).to_have_class("prio-medium")
            expect(leeds.locator(".phase")).to_contain_text("freeze")
            expect(page.locator('section.room[data-key="york/c1"]')).to_have_count(0)
            assert leeds.locator("li[data-probe='1'] polyline").get_attribute("points")
            if out:
                page.screenshot(path=str(out / "web-board.png"), full_page=True)
            # hostile text from the broker is text, never markup
            room.publish(
                "alarms/active",
                {
                    "alarms": [
                        {
                            "priority": "high",
                            "code": "<img src=x onerror=alert(1)>",
                            "message": "<b>x</b>",
                        }
                    ]
                },
            )
            expect(leeds.locator(".alarms li").first).to_contain_text(
                "<img src=x onerror=alert(1)>"
            )
            expect(leeds.locator(".alarms img")).to_have_count(0)
            # the room stops: offline after 3 s, last values greyed
            expect(leeds.locator(".link")).to_have_text(re.compile(r"^offline since \d\d:\d\d$"))
            expect(leeds).to_have_class(re.compile(r"\boffline\b"))
            expect(leeds.locator('li[data-probe="1"] .tip')).to_have_text("-86.0 °C")
            assert axe_serious_in(browser, base, "cora", ["/board"]) == []

            # procedures: the list, a procedure page with its plot
            page.get_by_role("link", name="Procedures").click()
            expect(page.get_by_role("heading", name="Procedures")).to_be_visible()
            page.get_by_label("Status").select_option("closed")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("#results")).to_contain_text("2 procedure(s)")
            expect(page).to_have_url(re.compile(r"status=closed"))
            page.get_by_role("link", name="1", exact=True).click()
            expect(page.get_by_role("heading", name=re.compile("Procedure 1"))).to_be_visible()
            plot = page.locator("img#plot")
            expect(plot).to_be_visible()
            page.wait_for_function(
                "() => { const i = document.getElementById('plot');"
                " return i.complete && i.naturalWidth > 800; }"
            )
            expect(page.locator("dd", has_text="<script>alert(1)</script>")).to_have_count(1)
            if out:
                page.screenshot(path=str(out / "web-procedure.png"), full_page=True)

            # a coordinator cannot see another site's procedure
            page.goto(f"{base}/procedures/york-th1/1")
            expect(page.get_by_role("alert")).to_have_text("No such procedure to show you.")
            page.goto(f"{base}/audit")
            expect(page.get_by_role("alert")).to_have_text("The audit is for monitors.")

            # a monitor reads, and cannot edit
            mctx = browser.new_context()
            contexts.append(mctx)
            mona = mctx.new_page()
            mona.set_default_timeout(TIMEOUT_MS)
            log_in(mona, base, "mona")
            expect(mona).to_have_url(f"{base}/board")
            mona.goto(f"{base}/procedures/york-th1/1")
            expect(mona.get_by_role("heading", name=re.compile("Procedure 1"))).to_be_visible()
            assert mona.locator("main form").count() == 0  # nothing to submit on a subject page
            mona.goto(f"{base}/users")
            expect(mona.get_by_role("alert")).to_have_text("Users are managed by admins.")
            mona.goto(f"{base}/audit/verify?room=york-th1")
            expect(mona.get_by_role("status")).to_have_text(
                re.compile(r"^collector copy consistent with york-th1 to seq \d+$")
            )
            assert (
                axe_serious_in(
                    browser,
                    base,
                    "mona",
                    [
                        "/procedures",
                        "/procedures/leeds-th2/1",
                        "/audit",
                        "/account",
                        "/audit/verify?room=leeds-th2",
                    ],
                )
                == []
            )
            # the admins' pages (the add-user form with its errors beside the fields)
            assert axe_serious_in(browser, base, "ada", ["/users", "/admin/studies"]) == []

            # logout
            page.goto(f"{base}/board")
            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_role("status")).to_have_text("You are logged out.")
            page.goto(f"{base}/procedures")
            expect(page).to_have_url(re.compile(r"/login\?next="))
            assert axe_serious_in(browser, base, None, ["/login"]) == []
            for c in contexts:
                c.close()
            contexts.clear()
    finally:
        for c in contexts:
            with contextlib.suppress(Exception):
                c.close()
        room.close()
        york.close()


def axe_serious_in(browser: Any, base: str, user: str | None, paths: list[str]) -> list[str]:
    """axe-core on each page, in a context that lets the test inject it (the app's CSP
    forbids any script not served by it, as it should)."""
    ctx = browser.new_context(bypass_csp=True)
    try:
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        if user is not None:
            log_in(page, base, user)
            page.wait_for_url(f"{base}/board")
        found = []
        for path in paths:
            page.goto(f"{base}{path}")
            page.wait_for_load_state("load")
            found += [f"{path}: {v}" for v in axe_serious(page)]
        return found
    finally:
        ctx.close()


@pytest.mark.timeout(300)
def test_the_csp_blocks_an_injected_inline_script(
    study_engine: tuple[Engine, dict[str, Room]], tmp_path: Path, broker: Mosquitto, browser: Any
) -> None:
    settings = live_settings(study_engine[0], tmp_path, broker)
    with serving(create_app(settings)) as base:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(f"{base}/login")
            with pytest.raises(Exception, match=r"(?i)content security policy|refused"):
                page.add_script_tag(content="window.injected = 1")
            assert page.evaluate("() => window.injected === undefined")
        finally:
            ctx.close()
