"""Changes to the collector's data, each made by a named user and audited.

Every function here takes the acting user (``Actor``, from ``authenticate``
or, for the very first admin only, ``bootstrap``), checks their grants
(``access``), makes the change and appends its audit entry in the same
transaction (the caller commits, then anchors the head). Nothing here asks
for a password or prints: that is the CLI's job.

What each entry holds (``payload``), so ``verify --self`` can compare the
tables with the chain:

- ``user_added``: ``user``, ``grants`` (role, study, site), ``password``
  (SHA-256 of the stored argon2 string: it shows a changed hash without
  giving anything to test a guess against), ``by``, ``bootstrap``;
- ``password_changed``: ``user``, ``password``, ``by``;
- ``user_disabled``: ``user``, ``by``;
- ``room_registered``: ``room`` (node), ``site``, ``credential``,
  ``cert_sha256``, ``first_seq``, ``first_hash``, ``by``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cryod.integrity import Head

from .access import (
    Grant,
    Role,
    check_user_name,
    may_add_room,
    may_manage_user,
    may_set_password,
)
from .ingest import Registration
from .passwords import verify_password
from .store import audit
from .store.models import Room, User, UserGrant

__all__ = [
    "Actor",
    "NotPermitted",
    "Refused",
    "add_room",
    "add_user",
    "authenticate",
    "bootstrap",
    "disable_user",
    "grants_of",
    "password_digest",
    "set_password",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
BOOTSTRAP = "bootstrap"


class NotPermitted(PermissionError):
    """The acting user is unknown, disabled, gave a wrong password, or lacks the grant."""


class Refused(ValueError):
    """The change itself is not possible (exists already, unknown, invalid)."""


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    grants: tuple[Grant, ...]
    bootstrap: bool = False


def password_digest(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()


def grants_of(session: Session, user: User) -> tuple[Grant, ...]:
    rows = session.execute(
        select(UserGrant).where(UserGrant.user_id == user.id).order_by(UserGrant.id)
    ).scalars()
    return tuple(Grant(Role(g.role), g.study, g.site) for g in rows)


def _grant_payload(grants: tuple[Grant, ...]) -> list[dict[str, Any]]:
    return [{"role": g.role.value, "study": g.study, "site": g.site} for g in grants]


def _user(session: Session, name: str) -> User | None:
    return session.execute(select(User).where(User.name == name)).scalar_one_or_none()


def bootstrap(session: Session) -> Actor | None:
    """The one actor who needs no account: whoever adds the first user (an admin)."""
    if session.execute(select(func.count()).select_from(User)).scalar_one() == 0:
        return Actor(BOOTSTRAP, (), bootstrap=True)
    return None


def authenticate(session: Session, name: str, password: str) -> Actor:
    """The acting user, if the name and password are an enabled account's."""
    user = _user(session, name)
    if user is None or not verify_password(user.password_hash, password):
        raise NotPermitted(f"user {name!r}: unknown, or the password is wrong")
    if user.disabled_at is not None:
        raise NotPermitted(f"user {name!r} is disabled")
    return Actor(user.name, grants_of(session, user))


def add_user(
    session: Session,
    actor: Actor,
    *,
    name: str,
    password_hash: str,
    grants: tuple[Grant, ...],
    now: dt.datetime,
    node: str,
) -> Head:
    problem = check_user_name(name)
    if problem is not None:
        raise Refused(problem)
    if name == BOOTSTRAP:
        raise Refused(f"{BOOTSTRAP!r} is reserved")
    if not grants:
        raise Refused("a user holds at least one role (--role)")
    if actor.bootstrap:
        if bootstrap(session) is None:
            raise NotPermitted("users exist: name who is acting (--as USER)")
        if Grant(Role.ADMIN) not in grants:
            raise NotPermitted("the first user is an admin of every study and site")
    elif not may_manage_user(actor.grants, grants):
        raise NotPermitted(f"{actor.name} may not grant {', '.join(map(str, grants))}")
    if _user(session, name) is not None:
        raise Refused(f"user {name!r} exists")
    user = User(
        name=name,
        password_hash=password_hash,
        created_at=now,
        created_by=actor.name,
        password_changed_at=now,
    )
    session.add(user)
    session.flush()
    for g in dict.fromkeys(grants):
        session.add(UserGrant(user_id=user.id, role=g.role.value, study=g.study, site=g.site))
    return audit.append(
        session,
        node=node,
        kind="user_added",
        payload={
            "user": name,
            "grants": _grant_payload(tuple(dict.fromkeys(grants))),
            "password": password_digest(password_hash),
            "by": actor.name,
            "bootstrap": actor.bootstrap,
        },
        at=now,
    )


def _target(session: Session, name: str) -> User:
    user = _user(session, name)
    if user is None:
        raise Refused(f"no user {name!r}")
    return user


def set_password(
    session: Session,
    actor: Actor,
    *,
    name: str,
    password_hash: str,
    now: dt.datetime,
    node: str,
) -> Head:
    user = _target(session, name)
    if not may_set_password(actor.name, actor.grants, name, grants_of(session, user)):
        raise NotPermitted(f"{actor.name} may not set {name}'s password")
    if user.disabled_at is not None:
        raise Refused(f"user {name!r} is disabled")
    user.password_hash = password_hash
    user.password_changed_at = now
    return audit.append(
        session,
        node=node,
        kind="password_changed",
        payload={"user": name, "password": password_digest(password_hash), "by": actor.name},
        at=now,
    )


def _enabled_full_admins(session: Session) -> set[str]:
    rows = session.execute(
        select(User.name)
        .join(UserGrant, UserGrant.user_id == User.id)
        .where(
            User.disabled_at.is_(None),
            UserGrant.role == Role.ADMIN.value,
            UserGrant.study.is_(None),
            UserGrant.site.is_(None),
        )
    ).scalars()
    return set(rows)


def disable_user(session: Session, actor: Actor, *, name: str, now: dt.datetime, node: str) -> Head:
    user = _target(session, name)
    if not may_manage_user(actor.grants, grants_of(session, user)):
        raise NotPermitted(f"{actor.name} may not disable {name}")
    if user.disabled_at is not None:
        raise Refused(f"user {name!r} is already disabled")
    if _enabled_full_admins(session) == {name}:
        raise Refused(f"{name} is the last admin of every study and site: add another first")
    user.disabled_at = now
    user.disabled_by = actor.name
    return audit.append(
        session,
        node=node,
        kind="user_disabled",
        payload={"user": name, "by": actor.name},
        at=now,
    )


def id_problem(label: str, value: str) -> str | None:
    """What is wrong with a node or site id (letters, digits, '_', '.', '-'; at most 64)."""
    if _ID.match(value):
        return None
    return f"{label} {value[:70]!r}: letters, digits, '_', '.', '-' (at most 64)"


def add_room(
    session: Session,
    actor: Actor,
    *,
    room: str,
    site: str,
    credential: str | None,
    cert_sha256: str | None,
    first_seq: int,
    first_hash: str | None,
    now: dt.datetime,
    node: str,
) -> Head:
    for label, value in (("node", room), ("site", site)):
        problem = id_problem(label, value)
        if problem is not None:
            raise Refused(problem)
    if cert_sha256 is not None and not _HEX64.match(cert_sha256):
        raise Refused("--cert-sha256: the certificate's SHA-256 fingerprint, 64 lowercase hex")
    if first_hash is not None and not _HEX64.match(first_hash):
        raise Refused("--first-hash: an entry hash, 64 lowercase hex")
    if credential is not None and not (1 <= len(credential) <= 128):
        raise Refused("--credential: the broker user name, 1-128 characters")
    try:
        Registration(room, site, first_seq, first_hash)
    except ValueError as exc:
        raise Refused(f"--first-seq/--first-hash: {exc}") from None
    if not may_add_room(actor.grants, site):
        raise NotPermitted(f"{actor.name} may not register rooms at site {site}")
    if session.get(Room, room) is not None:
        raise Refused(f"room {room!r} is registered")
    payload = {
        "room": room,
        "site": site,
        "credential": credential,
        "cert_sha256": cert_sha256,
        "first_seq": first_seq,
        "first_hash": first_hash,
        "by": actor.name,
    }
    head = audit.append(session, node=node, kind="room_registered", payload=payload, at=now)
    session.add(
        Room(
            node=room,
            site=site,
            credential=credential,
            cert_sha256=cert_sha256,
            first_seq=first_seq,
            first_hash=first_hash,
            registered_at=now,
            registered_by=actor.name,
            audit_seq=head.seq,
        )
    )
    session.flush()
    return head
