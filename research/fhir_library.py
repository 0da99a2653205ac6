"""The one module of cryod that imports ``fhir.resources`` (the optional extra ``research``).

``fhir.resources`` (R4B models, pydantic 2) checks structure, cardinality
and data types. It lets through what the specification forbids at the level
of values (``Observation.status = "bogus"`` passes): ``fhir_check`` adds
those rules on top.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .problems import Problem, problems_from_validation

__all__ = ["FhirLibraryMissing", "library_problems"]

#: the release line the project is tested with (pyproject: extra ``research``)
LIBRARY = "fhir.resources 8.3 (R4B models)"


class FhirLibraryMissing(RuntimeError):
    """fhir.resources is not installed: install the extra, ``pip install 'cryod[research]'``."""


def library_problems(bundle: dict[str, Any]) -> list[Problem]:
    """What ``fhir.resources``' R4B Bundle model refuses in ``bundle`` (empty: accepted)."""
    try:
        from fhir.resources.R4B.bundle import Bundle
    except ImportError as exc:
        raise FhirLibraryMissing(
            f"FHIR validation needs {LIBRARY}: pip install 'cryod[research]'"
        ) from exc
    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        return [
            Problem(p.field, f"{p.message} (fhir.resources)")
            for p in problems_from_validation(exc, "Bundle")
        ]
    return []
