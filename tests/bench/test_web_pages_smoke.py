"""tests/bench/web_pages.py end to end on a tiny study: the harness runs (study,
follow-up assessments, ``cryohub run`` ingesting from the load generator while the
pages are timed) and its JSON has every key. No timing is asserted."""

from __future__ import annotations

import json

import pytest

from tests.conftest import require_binary

from . import web_pages


@pytest.mark.timeout(300)
def test_tiny_run_with_ingest_has_every_key() -> None:
    require_binary("mosquitto")
    out = web_pages.main(
        ["--procedures", "40", "--assessments", "350", "--requests", "4", "--ingest-rooms", "2"]
    )
    json.loads(json.dumps(out))
    assert out["assessments"] == 350
    for key in ("list_ms", "procedure_page_ms"):
        assert set(out[key]) == {50, 95, 100}
    ingest = out["ingest"]
    assert ingest["rooms"] == 2
    # the harness measures only once the generator's entries are stored (else it exits)
    assert ingest["stored_messages_per_s"] >= 0
    assert set(out["quiet"]) == {"list_ms", "procedure_page_ms"}
    assert isinstance(out["within_target"], bool)
