"""The project's own check of a FHIR bundle: what fhir.resources lets through.

Rules (each problem names the entry and the element):

- required bindings: the status codes and other required-bound codes the
  bundle uses hold a code of their value set (``fhir_terms.REQUIRED_CODES``,
  ``REQUIRED_CONCEPTS``), identifier use and quantity comparators too;
- code lists: the procedure and indication codings are the study profile's,
  every code of a cryod code system is in that system (the record's
  vocabularies), eligibility items are the profile checklist's, the pain
  score uses the profile's scale (LOINC 72514-3 for NRS), the HL7 codes used
  are in their code systems, every extension of cryod is known;
- units: every Quantity is UCUM with one of the export's units;
- references: every reference resolves to an entry of the bundle, and to a
  resource of a type the element allows; full URLs and ids are unique;
- privacy: a Patient carries its pseudonymous identifier and nothing else.

``validate_bundle`` runs both fhir.resources and these rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .fhir_bundle import pain_code
from .fhir_library import library_problems
from .fhir_terms import (
    CRYOD_FHIR_BASE,
    EXTENSIONS,
    HL7_CODES,
    IDENTIFIER_USE,
    QUANTITY_COMPARATOR,
    REFERENCE_TARGETS,
    REQUIRED_CODES,
    REQUIRED_CONCEPTS,
    UCUM,
    UCUM_UNITS,
    cs,
    display,
)
from .problems import Problem
from .profile import StudyProfile

__all__ = ["project_problems", "validate_bundle"]

JSON = dict[str, Any]


def _at(node: Any, path: str) -> Iterator[Any]:
    """Every value at a dotted path, lists flattened."""
    head, _, rest = path.partition(".")
    items = node if isinstance(node, list) else [node]
    for item in items:
        if not isinstance(item, dict) or head not in item:
            continue
        value = item[head]
        if rest:
            yield from _at(value, rest)
        elif isinstance(value, list):
            yield from value
        else:
            yield value


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, JSON]]:
    """Every dict in a resource, with its dotted path."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}.{i}")


def _codings(concept: Any) -> list[JSON]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding", []) if isinstance(c, dict)]


class _Check:
    def __init__(self, bundle: JSON, profile: StudyProfile) -> None:
        self.bundle = bundle
        self.profile = profile
        self.problems: list[Problem] = []
        self.types: dict[str, str] = {}  # full URL -> resource type

    def add(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def run(self) -> list[Problem]:
        b = self.bundle
        if b.get("resourceType") != "Bundle":
            self.add("Bundle", "not a Bundle")
            return self.problems
        for code in _at(b, "type"):
            if code not in REQUIRED_CODES[("Bundle", "type")]:
                self.add("Bundle.type", f"{code!r} is not a Bundle type")
        entries = [e for e in b.get("entry", []) if isinstance(e, dict)]
        ids: set[tuple[str, str]] = set()
        for i, entry in enumerate(entries):
            url, res = entry.get("fullUrl"), entry.get("resource")
            where = f"Bundle.entry.{i}"
            if not isinstance(url, str) or not isinstance(res, dict):
                self.add(where, "an entry has a fullUrl and a resource")
                continue
            if url in self.types:
                self.add(f"{where}.fullUrl", f"duplicate fullUrl {url}")
            kind = str(res.get("resourceType"))
            self.types[url] = kind
            key = (kind, str(res.get("id")))
            if key in ids:
                self.add(f"{where}.resource.id", f"duplicate {kind} id {key[1]}")
            ids.add(key)
        for i, entry in enumerate(entries):
            res = entry.get("resource")
            if isinstance(res, dict):
                self.resource(f"Bundle.entry.{i}.resource", res)
        return self.problems

    # ---- one resource ------------------------------------------------------------
    def resource(self, where: str, res: JSON) -> None:
        kind = str(res.get("resourceType"))
        where = f"{where}({kind})"
        for (rtype, path), allowed in REQUIRED_CODES.items():
            if rtype != kind:
                continue
            for code in _at(res, path):
                if code not in allowed:
                    self.add(
                        f"{where}.{path}",
                        f"{code!r} is not in the required value set ({', '.join(sorted(allowed))})",
                    )
        for (rtype, path), (system, allowed) in REQUIRED_CONCEPTS.items():
            if rtype != kind:
                continue
            for concept in _at(res, path):
                codes = [c.get("code") for c in _codings(concept) if c.get("system") == system]
                if not codes or any(c not in allowed for c in codes):
                    self.add(
                        f"{where}.{path}",
                        f"needs a code of {system} ({', '.join(sorted(allowed))})",
                    )
        for (rtype, path), targets in REFERENCE_TARGETS.items():
            if rtype != kind:
                continue
            for ref in _at(res, path):
                target = self.types.get(ref.get("reference", "")) if isinstance(ref, dict) else None
                if target is not None and target not in targets:
                    self.add(
                        f"{where}.{path}",
                        f"refers to a {target}, allowed: {', '.join(sorted(targets))}",
                    )
        for path, node in _walk(res):
            self.element(f"{where}.{path}" if path else where, node)
        if kind == "Patient":
            self.patient(where, res)
        if kind == "Procedure":
            self.procedure(where, res)
        if kind == "ResearchStudy":
            self.indications(f"{where}.condition", list(_at(res, "condition")))
        if kind == "Observation":
            self.observation(where, res)

    def element(self, where: str, node: JSON) -> None:
        """Rules for any element: references, codings, quantities, identifiers, extensions."""
        ref = node.get("reference")
        if isinstance(ref, str) and ref not in self.types:
            self.add(where, f"reference {ref} does not resolve inside the bundle")
        system, code = node.get("system"), node.get("code")
        if isinstance(system, str) and "value" in node and "code" in node:
            self.quantity(where, node)
        elif isinstance(system, str) and isinstance(code, str):
            self.coding(where, system, code)
        if "use" in node and "value" in node and node["use"] not in IDENTIFIER_USE:
            self.add(f"{where}.use", f"{node['use']!r} is not an identifier use")
        url = node.get("url")
        if (
            isinstance(url, str)
            and url.startswith(CRYOD_FHIR_BASE)
            and ("extension" in node or any(k.startswith("value") for k in node))
            and url not in EXTENSIONS
        ):
            self.add(where, f"unknown cryod extension {url}")

    def coding(self, where: str, system: str, code: str) -> None:
        if system == cs("eligibility-item"):
            checklist = self.profile.eligibility
            items = {i.id for i in checklist.items} if checklist else set()
            if code not in items:
                self.add(where, f"{code!r} is not an item of the study's eligibility checklist")
        elif system.startswith(CRYOD_FHIR_BASE):
            if display(system, code) is None:
                self.add(where, f"{code!r} is not a code of {system}")
        elif system in HL7_CODES and code not in HL7_CODES[system]:
            self.add(where, f"{code!r} is not a code of {system}")

    def quantity(self, where: str, q: JSON) -> None:
        if q.get("system") != UCUM or q.get("code") not in UCUM_UNITS:
            self.add(
                where,
                f"a quantity's unit is UCUM, one of {', '.join(UCUM_UNITS)} "
                f"(got {q.get('system')}|{q.get('code')})",
            )
        if "comparator" in q and q["comparator"] not in QUANTITY_COMPARATOR:
            self.add(f"{where}.comparator", f"{q['comparator']!r} is not a comparator")
        if not isinstance(q.get("value"), int | float) or isinstance(q.get("value"), bool):
            self.add(f"{where}.value", "a quantity has a numeric value")

    # ---- resource-specific rules -------------------------------------------------
    def patient(self, where: str, res: JSON) -> None:
        extra = sorted(set(res) - {"resourceType", "id", "meta", "identifier"})
        if extra:
            self.add(where, f"a Patient carries its pseudonym only (found: {', '.join(extra)})")
        idents = list(_at(res, "identifier"))
        if len(idents) != 1 or idents[0].get("system") != self.profile.pseudonym_system:
            self.add(
                f"{where}.identifier",
                f"one identifier, the study pseudonym ({self.profile.pseudonym_system})",
            )

    def procedure(self, where: str, res: JSON) -> None:
        want = self.profile.codes.procedure
        codes = [(c.get("system"), c.get("code")) for c in _codings(res.get("code"))]
        if (want.system, want.code) not in codes:
            self.add(
                f"{where}.code",
                f"the study's procedure code is {want.system}|{want.code} (got {codes})",
            )
        self.indications(f"{where}.reasonCode", list(_at(res, "reasonCode")))

    def indications(self, where: str, concepts: list[Any]) -> None:
        allowed = {(c.system, c.code) for c in self.profile.codes.indications}
        for concept in concepts:
            for c in _codings(concept):
                if (c.get("system"), c.get("code")) not in allowed:
                    self.add(
                        where,
                        f"{c.get('system')}|{c.get('code')} is not an indication of study "
                        f"{self.profile.study.id}",
                    )

    def observation(self, where: str, res: JSON) -> None:
        codes = {(c.get("system"), c.get("code")) for c in _codings(res.get("code"))}
        pain_codes = {
            ("http://loinc.org", "72514-3"),
            (cs("assessment"), "pain-vas-100mm"),
        }
        if not codes & pain_codes:
            return
        want = {
            (c["system"], c["code"])
            for c in _codings(pain_code(self.profile.instruments.pain.scale))
        }
        if not codes & want:
            self.add(
                f"{where}.code",
                f"study {self.profile.study.id} scores pain on "
                f"{self.profile.instruments.pain.scale.value}",
            )


def project_problems(bundle: JSON, profile: StudyProfile) -> list[Problem]:
    """The project's rules only (see the module docstring); empty: the bundle passes."""
    return _Check(bundle, profile).run()


def validate_bundle(bundle: JSON, profile: StudyProfile) -> list[Problem]:
    """Both validations: fhir.resources' R4B models, then the project's rules."""
    return library_problems(bundle) + project_problems(bundle, profile)
