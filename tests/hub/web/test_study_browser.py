"""The study page in Chromium (Playwright, Debian's /usr/bin/chromium): a monitor
opens the study, sees the tables and the plot, and downloads each export through
the browser's own download (Playwright's download API, no sleeps); each file is
parsed as in the TestClient tests. axe-core: no serious or critical violation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cryod.hub.web.app import WebSettings, create_app
from cryod.hub.web.study_view import FORMAT_NAMES, FORMATS
from tests.hub.test_followup_cli import journal, study, study_config  # noqa: F401  (fixtures)

from .live import serving
from .study_data import PASSWORDS, STUDY_ID, exports_audited, followed  # noqa: F401
from .test_browser import TIMEOUT_MS, axe_serious, browser, log_in
from .test_study_pages import check_export

__all__ = ["browser"]  # the fixture, shared with test_browser

SUBJECTS = {"MN-0001", "MN-0002", "MN-0003", "MN-0004"}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_monitor_downloads_every_export_in_a_browser(
    followed: WebSettings,  # noqa: F811
    browser: Any,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with serving(create_app(followed)) as base:
        ctx = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        try:
            page = ctx.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            log_in(page, base, "mon", PASSWORDS["mon"])
            expect(page).to_have_url(f"{base}/board")
            page.get_by_role("link", name="Studies").click()
            page.get_by_role("link", name="every site").click()
            expect(page.get_by_role("heading", level=1)).to_have_text(
                f"Study {STUDY_ID} — every site"
            )
            expect(page.locator("#summary-heading")).to_contain_text("4 subject(s)")
            plot = page.get_by_role("img", name="Median pain")
            expect(plot).to_be_visible()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=plot.element_handle()
            )
            for fmt in FORMATS:
                with page.expect_download() as info:
                    page.get_by_role("button", name=FORMAT_NAMES[fmt]).click()
                download = info.value
                assert download.failure() is None
                target = tmp_path / download.suggested_filename
                download.save_as(target)
                media = "application/zip" if target.suffix == ".zip" else f"application/{fmt}"
                check_export(fmt, target.name, target.read_bytes(), media, SUBJECTS)
                # the page is still the study page: a download navigates nowhere
                expect(page.locator("#summary-heading")).to_contain_text("4 subject(s)")
        finally:
            ctx.close()
        # axe-core, injected in a context that lets the test do it (the app's CSP forbids it)
        actx = browser.new_context(bypass_csp=True)
        try:
            page = actx.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            log_in(page, base, "mon", PASSWORDS["mon"])
            page.wait_for_url(f"{base}/board")
            for path in ("/studies", f"/studies/{STUDY_ID}", f"/studies/{STUDY_ID}?on=nope"):
                page.goto(f"{base}{path}")
                page.wait_for_load_state("load")
                assert axe_serious(page) == [], path
        finally:
            actx.close()
    audited = exports_audited(followed.engine)
    assert [(e["by"], e["format"]) for e in audited] == [("mon", f) for f in FORMATS]
