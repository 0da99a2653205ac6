"""The research docs list what the code does: every vocabulary code, every REDCap rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cryod.research import vocab
from cryod.research.fhir_terms import CYCLE_FIGURES, EXTENSIONS, UCUM_UNITS
from cryod.research.vocab import Coded

DOCS = Path(__file__).resolve().parents[2] / "docs"
VOCABS = [
    v
    for v in vars(vocab).values()
    if isinstance(v, type) and issubclass(v, Coded) and v is not Coded
]


@pytest.mark.parametrize("enum", VOCABS, ids=lambda e: e.__name__)
def test_data_dictionary_lists_every_code(enum: type[Coded]) -> None:
    text = (DOCS / "data-dictionary.md").read_text()
    section = text.split(f"### `{enum.__name__}`", 1)[1].split("###", 1)[0]
    listed = re.findall(r"^\| `([a-z0-9_]+)` \| (.+) \|$", section, flags=re.MULTILINE)
    assert listed == [(m.value, m.label) for m in enum]


def test_fhir_mapping_names_every_figure_extension_and_unit() -> None:
    text = (DOCS / "fhir-mapping.md").read_text()
    for code in CYCLE_FIGURES:
        assert f"`{code}`" in text, code
    for url in EXTENSIONS:
        assert f"`{url.rsplit('/', 1)[1]}`" in text, url
    for unit in UCUM_UNITS:
        assert f"`{unit}`" in text, unit


def test_readme_lists_the_research_docs() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    for name in ("study-profile.md", "data-dictionary.md", "fhir-mapping.md", "redcap-mapping.md"):
        assert f"docs/{name}" in readme, name
