"""Users' roles and who may change what. Pure: the caller passes the grants.

Roles (a user holds one or more **grants**, each a role optionally scoped to
one study and/or one site; an unscoped grant covers every study and site):

- ``admin``: manages users and registers rooms (within its scope);
- ``coordinator``: runs a study at a site (follow-up, later issues);
- ``investigator``: reads and signs off the study's data (later issues);
- ``monitor``: reads, never changes (later issues).

This issue's actions: ``user.add``, ``user.disable``, ``user.passwd`` (every
user may change their own password), ``room.add``. An admin scoped to a site
registers rooms of that site and manages users whose every grant lies within
that site (and study, if scoped); only an unscoped admin grants ``admin``
unscoped. Later issues add their actions here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "USER_NAME",
    "Grant",
    "Role",
    "check_user_name",
    "may_add_room",
    "may_manage_user",
    "may_set_password",
    "refusal",
]

USER_NAME: Final = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")


class Role(enum.StrEnum):
    ADMIN = "admin"
    COORDINATOR = "coordinator"
    INVESTIGATOR = "investigator"
    MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class Grant:
    role: Role
    study: str | None = None
    site: str | None = None

    def covers(self, other: Grant) -> bool:
        """Is ``other``'s scope inside this grant's scope?"""
        return self.covers_scope(other.study, other.site)

    def covers_scope(self, study: str | None, site: str | None) -> bool:
        """Does this grant cover ``study`` at ``site``? ``None`` asks for every study or
        every site, which only a grant not scoped to one covers."""
        return (self.study is None or self.study == study) and (
            self.site is None or self.site == site
        )

    def __str__(self) -> str:
        scope = [
            f"study {self.study}" if self.study else "",
            f"site {self.site}" if self.site else "",
        ]
        where = ", ".join(s for s in scope if s)
        return f"{self.role.value}" + (f" ({where})" if where else "")


def check_user_name(name: str) -> str | None:
    if not USER_NAME.match(name):
        return (
            f"user name {name[:70]!r}: 2-64 characters, lowercase letters, digits, "
            "'_', '.', '-', starting with a letter"
        )
    return None


def _admin_grants(grants: Iterable[Grant]) -> list[Grant]:
    return [g for g in grants if g.role is Role.ADMIN]


def may_add_room(actor: Iterable[Grant], site: str) -> bool:
    return any(g.site in (None, site) for g in _admin_grants(actor))


def may_manage_user(actor: Iterable[Grant], target: Iterable[Grant]) -> bool:
    """Add or disable a user holding ``target`` (every target grant in one admin scope)."""
    admins = _admin_grants(actor)
    if not admins:
        return False
    return all(any(a.covers(t) for a in admins) for t in target)


def may_set_password(
    actor_name: str, actor: Iterable[Grant], target_name: str, target: Iterable[Grant]
) -> bool:
    return actor_name == target_name or may_manage_user(actor, target)


def refusal(action: str, actor_name: str) -> str:
    return f"{actor_name} may not {action} (no admin grant covering it)"
