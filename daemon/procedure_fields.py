"""The procedure's own fields, written down once (issue 16: one list, not four).

What the operator gives when a procedure opens (``cryoctl procedure open``
flags), what the open request accepts (``store.records.ProcedureOpen``), the
``procedures`` table (``store.models.Procedure``), what ``show`` and the
export carry (``store.queries.procedure_metadata``, ``store.export``) are all
derived from ``OPEN_FIELDS`` and the table's columns; ``tests/store`` checks
that the request model and the table agree with this list.

Pure data (no pydantic, no SQLAlchemy): ``cryoctl`` builds its parser from it
without loading the store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ADVERSE_EVENT_CODES",
    "CONSOLE_FIELDS",
    "OPEN_FIELDS",
    "AdverseEvent",
    "Anaesthesia",
    "Imaging",
    "Indication",
    "OpenField",
    "Side",
]


class Indication(enum.StrEnum):
    MORTONS_NEUROMA = "mortons_neuroma"
    STUMP_NEUROMA = "stump_neuroma"
    OTHER_TRAUMATIC_NEUROMA = "other_traumatic_neuroma"
    OTHER = "other"


class Side(enum.StrEnum):
    LEFT = "left"
    RIGHT = "right"
    BILATERAL = "bilateral"
    MIDLINE = "midline"
    NA = "na"


class Imaging(enum.StrEnum):
    ULTRASOUND = "ultrasound"
    CT = "ct"
    MRI = "mri"


class Anaesthesia(enum.StrEnum):
    LOCAL = "local"
    REGIONAL = "regional"
    GENERAL = "general"


class AdverseEvent(enum.StrEnum):
    """The old yes/no adverse-event codes (``procedures.adverse_events``), kept as the
    summary of the adverse-event rows at close; the rows are the record (issue 19)."""

    PAIN = "pain"
    WORSENING_OF_SYMPTOMS = "worsening_of_symptoms"
    INFECTION = "infection"
    DAMAGE_TO_ADJACENT_STRUCTURES = "damage_to_adjacent_structures"
    FURTHER_INTERVENTION_NEEDED = "further_intervention_needed"
    OTHER = "other"


ADVERSE_EVENT_CODES = tuple(code.value for code in AdverseEvent)


@dataclass(frozen=True, slots=True)
class OpenField:
    """One field the operator gives at open: its name (also the column's), the code
    list it takes (None: free text), whether it must be given, and the help text."""

    name: str
    help: str
    choices: type[enum.StrEnum] | None = None
    required: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def codes(self) -> list[str] | None:
        return None if self.choices is None else [c.value for c in self.choices]


#: the fields the operator gives at open, in the order of the table's columns
OPEN_FIELDS: tuple[OpenField, ...] = (
    OpenField("patient_ref", "pseudonymous reference, never a name", required=True),
    OpenField(
        "indication",
        "indication (under a study, defaults from the selection's indication)",
        Indication,
        required=True,
    ),
    OpenField("indication_other", "free text when the indication is 'other'"),
    OpenField("site", "anatomical site (free text)", required=True),
    OpenField("side", "side", Side, required=True),
    OpenField(
        "imaging",
        "imaging guidance (under a study, defaults from the first of --imaging-modalities)",
        Imaging,
        required=True,
    ),
    OpenField(
        "anaesthesia",
        "anaesthesia (under a study, defaults from the procedure details')",
        Anaesthesia,
        required=True,
    ),
    OpenField("operator", "who operates (default: the user running cryoctl)", required=True),
    OpenField("study_id", "study id (under a study profile: the profile's)"),
    OpenField("probe_model", "probe model"),
    OpenField("probe_lot", "probe lot"),
)

#: the console's identity, filled by the daemon at open (never by the operator)
CONSOLE_FIELDS: tuple[str, ...] = (
    "console",
    "console_model",
    "console_serial",
    "console_firmware",
    "software_version",
    "host_only_limits",
)
