"""Who sees what in the web app. Pure: the caller passes the user's grants.

- Subjects' pages (procedures, their plots, alarms and adverse events): a
  ``coordinator``, ``investigator`` or ``monitor`` grant whose scope covers
  the procedure's study and the site of the room that recorded it. Site staff
  (a grant scoped to a site) see only their own sites' subjects; an admin
  grant alone gives no subject data (admins manage users and rooms).
- The rooms board (no subject data): any grant covering the room's site.
- The audit page: a ``monitor`` or ``admin`` grant.
- Editing anything: never a monitor; managing users: an admin (``access``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..access import Grant, Role

__all__ = [
    "READER_ROLES",
    "may_read_audit",
    "may_read_subject",
    "may_see_room",
    "readable_scopes",
]

READER_ROLES = frozenset({Role.COORDINATOR, Role.INVESTIGATOR, Role.MONITOR})


def may_read_subject(grants: Iterable[Grant], study: str | None, site: str) -> bool:
    """A procedure of ``study`` recorded in a room of ``site``."""
    return any(g.role in READER_ROLES and g.covers_scope(study, site) for g in grants)


def may_see_room(grants: Iterable[Grant], site: str) -> bool:
    return any(g.site is None or g.site == site for g in grants)


def may_read_audit(grants: Iterable[Grant]) -> bool:
    return any(g.role in (Role.MONITOR, Role.ADMIN) for g in grants)


def readable_scopes(grants: Iterable[Grant]) -> list[tuple[str | None, str | None]]:
    """(study, site) pairs of the reader grants (None: any)."""
    return sorted(
        {(g.study, g.site) for g in grants if g.role in READER_ROLES},
        key=lambda s: (s[0] or "", s[1] or ""),
    )
