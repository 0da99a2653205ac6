"""Users, roles and rooms: who may change what, each change in the audit chain
(PostgreSQL and SQLite), and ``verify --self`` catching what was changed behind it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from cryod.hub import admin
from cryod.hub.access import Grant, Role
from cryod.hub.admin import Actor, NotPermitted, Refused
from cryod.hub.passwords import hash_password
from cryod.hub.store import audit
from cryod.hub.store.db import writer
from cryod.hub.store.models import Room, User
from cryod.hub.verify import StoredRoom, StoredUser, check_self
from cryod.integrity import AnchorHead, check_chain

from .conftest import NODE, T0

ADMIN = Grant(Role.ADMIN)
PW = {name: f"{name}-correct-horse" for name in ("root", "ana", "bob", "cy", "site-admin")}
HASHES: dict[str, str] = {}


def pw_hash(name: str) -> str:
    if name not in HASHES:  # argon2 is slow on purpose: once per name per session
        HASHES[name] = hash_password(PW[name])
    return HASHES[name]


def change(engine: Engine, fn: Callable[[Session], Any]) -> Any:
    with Session(writer(engine)) as s, s.begin():
        return fn(s)


def add(engine: Engine, actor: Actor, name: str, *grants: Grant) -> Any:
    return change(
        engine,
        lambda s: admin.add_user(
            s, actor, name=name, password_hash=pw_hash(name), grants=grants, now=T0, node=NODE
        ),
    )


def login(engine: Engine, name: str, password: str | None = None) -> Actor:
    with Session(engine) as s:
        return admin.authenticate(s, name, PW[name] if password is None else password)


@pytest.fixture
def root(migrated: Engine) -> Actor:
    with Session(migrated) as s:
        boot = admin.bootstrap(s)
    assert boot is not None
    add(migrated, boot, "root", ADMIN)
    return login(migrated, "root")


def chain(engine: Engine) -> list[Any]:
    with Session(engine) as s:
        return audit.entries(s)


def test_the_first_admin_is_bootstrapped_then_never_again(migrated: Engine, root: Actor) -> None:
    with Session(migrated) as s:
        assert admin.bootstrap(s) is None
    with pytest.raises(NotPermitted, match="users exist"):
        add(migrated, Actor("bootstrap", (), bootstrap=True), "ana", ADMIN)
    entry = chain(migrated)[-1]
    assert entry.kind == "user_added"
    assert entry.payload["by"] == "bootstrap"
    assert entry.payload["bootstrap"] is True
    assert entry.payload["grants"] == [{"role": "admin", "study": None, "site": None}]
    assert PW["root"] not in str(entry.payload)
    assert pw_hash("root") not in str(entry.payload)


def test_the_first_user_must_be_an_unscoped_admin(migrated: Engine) -> None:
    boot = Actor("bootstrap", (), bootstrap=True)
    with pytest.raises(NotPermitted, match="admin of every"):
        add(migrated, boot, "ana", Grant(Role.ADMIN, site="s1"))


def test_every_change_names_who_made_it_and_the_chain_holds(migrated: Engine, root: Actor) -> None:
    add(migrated, root, "ana", Grant(Role.COORDINATOR, study="MN-1", site="s1"))
    change(
        migrated,
        lambda s: admin.add_room(
            s,
            root,
            room="room-1",
            site="s1",
            credential="room-1",
            cert_sha256=None,
            first_seq=1,
            first_hash=None,
            now=T0,
            node=NODE,
        ),
    )
    ana = login(migrated, "ana")
    change(
        migrated,
        lambda s: admin.set_password(
            s, ana, name="ana", password_hash=pw_hash("bob"), now=T0, node=NODE
        ),
    )
    change(migrated, lambda s: admin.disable_user(s, root, name="ana", now=T0, node=NODE))
    entries = chain(migrated)
    assert [e.kind for e in entries] == [
        "database_created",
        "user_added",
        "user_added",
        "room_registered",
        "password_changed",
        "user_disabled",
    ]
    assert [e.payload.get("by") for e in entries[1:]] == [
        "bootstrap",
        "root",
        "root",
        "ana",
        "root",
    ]
    assert check_chain(entries).ok
    with Session(migrated) as s:
        room = s.get(Room, "room-1")
        assert room is not None
        assert room.audit_seq == 4
        assert room.registered_by == "root"
    with pytest.raises(NotPermitted, match="disabled"):
        login(migrated, "ana", PW["bob"])


def test_a_wrong_password_or_unknown_user_is_not_permitted(migrated: Engine, root: Actor) -> None:
    with pytest.raises(NotPermitted):
        login(migrated, "root", "not-the-password")
    with pytest.raises(NotPermitted):
        login(migrated, "nobody-here", "whatever-whatever")


def test_only_admins_manage_users_and_within_their_scope(migrated: Engine, root: Actor) -> None:
    add(migrated, root, "ana", Grant(Role.COORDINATOR, site="s1"))
    add(migrated, root, "site-admin", Grant(Role.ADMIN, site="s1"))
    ana, site_admin = login(migrated, "ana"), login(migrated, "site-admin")
    with pytest.raises(NotPermitted):
        add(migrated, ana, "bob", Grant(Role.MONITOR, site="s1"))
    add(migrated, site_admin, "bob", Grant(Role.MONITOR, site="s1"))
    with pytest.raises(NotPermitted):
        add(migrated, site_admin, "cy", Grant(Role.MONITOR, site="s2"))
    with pytest.raises(NotPermitted):
        add(migrated, site_admin, "cy", ADMIN)  # an unscoped grant is outside its scope
    with pytest.raises(NotPermitted):
        change(
            migrated, lambda s: admin.disable_user(s, site_admin, name="root", now=T0, node=NODE)
        )
    with pytest.raises(NotPermitted):
        change(
            migrated,
            lambda s: admin.set_password(
                s, ana, name="bob", password_hash=pw_hash("cy"), now=T0, node=NODE
            ),
        )
    with pytest.raises(NotPermitted):
        change(
            migrated,
            lambda s: admin.add_room(
                s,
                site_admin,
                room="r2",
                site="s2",
                credential=None,
                cert_sha256=None,
                first_seq=1,
                first_hash=None,
                now=T0,
                node=NODE,
            ),
        )


def test_the_last_full_admin_cannot_be_disabled(migrated: Engine, root: Actor) -> None:
    with pytest.raises(Refused, match="last admin"):
        change(migrated, lambda s: admin.disable_user(s, root, name="root", now=T0, node=NODE))
    add(migrated, root, "ana", ADMIN)
    change(migrated, lambda s: admin.disable_user(s, root, name="root", now=T0, node=NODE))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"room": "room/1"}, "node"),
        ({"site": ""}, "site"),
        ({"first_seq": 5}, "needs its hash"),
        ({"first_hash": "XYZ"}, "first-hash"),
        ({"cert_sha256": "ab"}, "cert-sha256"),
    ],
)
def test_room_registrations_are_checked(
    migrated: Engine, root: Actor, kw: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {
        "room": "room-1",
        "site": "s1",
        "credential": None,
        "cert_sha256": None,
        "first_seq": 1,
        "first_hash": None,
    }
    args.update(kw)
    with pytest.raises(Refused, match=match):
        change(migrated, lambda s: admin.add_room(s, root, now=T0, node=NODE, **args))


def test_existing_names_are_refused(migrated: Engine, root: Actor) -> None:
    with pytest.raises(Refused, match="exists"):
        add(migrated, root, "root", ADMIN)
    with pytest.raises(Refused, match="user name"):
        change(
            migrated,
            lambda s: admin.add_user(
                s,
                root,
                name="Bad Name",
                password_hash=pw_hash("ana"),
                grants=(ADMIN,),
                now=T0,
                node=NODE,
            ),
        )


# ---- verify --self ------------------------------------------------------------------------------
def self_report(engine: Engine, sources: dict[str, list[AnchorHead]] | None = None) -> Any:
    with Session(engine) as s:
        entries = audit.entries(s)
        users = [
            StoredUser(
                u.name,
                frozenset((g.role.value, g.study, g.site) for g in admin.grants_of(s, u)),
                u.password_hash,
                u.disabled_at is not None,
            )
            for u in s.execute(select(User)).scalars()
        ]
        rooms = [
            StoredRoom(
                r.node,
                {
                    "site": r.site,
                    "credential": r.credential,
                    "cert_sha256": r.cert_sha256,
                    "first_seq": r.first_seq,
                    "first_hash": r.first_hash,
                },
            )
            for r in s.execute(select(Room)).scalars()
        ]
    return check_self(NODE, entries, users, rooms, sources or {})


@pytest.fixture
def populated(migrated: Engine, root: Actor) -> Engine:
    add(migrated, root, "ana", Grant(Role.INVESTIGATOR, study="MN-1"))
    change(
        migrated,
        lambda s: admin.add_room(
            s,
            root,
            room="room-1",
            site="s1",
            credential="room-1",
            cert_sha256=None,
            first_seq=1,
            first_hash=None,
            now=T0,
            node=NODE,
        ),
    )
    return migrated


def test_verify_self_passes_on_an_untouched_database(populated: Engine) -> None:
    report = self_report(populated)
    assert report.exit_code == 0, report.lines()
    assert report.lines()[0].startswith("chain: ok (4 entries; node hub-test; head 4:")


EDITS = {
    "password hash swapped": (
        "UPDATE users SET password_hash = 'x' WHERE name = 'ana'",
        "users ana column password_hash: edited",
    ),
    "role raised": (
        "UPDATE user_grants SET role = 'admin', study = NULL WHERE role = 'investigator'",
        "user_grants ana: edited",
    ),
    "user re-enabled": ("UPDATE users SET disabled_at = NULL WHERE name = 'ana'", None),
    "user inserted": (
        "INSERT INTO users (name, password_hash, created_at, created_by, "
        "password_changed_at) SELECT 'eve', password_hash, created_at, 'root', "
        "created_at FROM users WHERE name = 'root'",
        "users eve: inserted",
    ),
    "room site moved": ("UPDATE rooms SET site = 's2'", "rooms room-1 column site: edited"),
    "room deleted": ("DELETE FROM rooms", "rooms room-1: deleted"),
}


@pytest.mark.parametrize("what", EDITS)
def test_verify_self_names_a_table_edited_behind_the_collectors_back(
    populated: Engine, what: str
) -> None:
    sql, expect = EDITS[what]
    if what == "user re-enabled":
        root = Actor("root", (ADMIN,))
        change(populated, lambda s: admin.disable_user(s, root, name="ana", now=T0, node=NODE))
        expect = "users ana column disabled_at: edited"
    with populated.begin() as conn:
        conn.execute(text(sql))
    report = self_report(populated)
    assert report.exit_code == 4
    assert any(expect in line for line in report.lines()), report.lines()


def _rewrite_entry(engine: Engine, seq: int) -> None:
    """An attacker with the database: edit an entry and recompute the chain after it."""
    from cryod.integrity import entry_hash, format_time

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_no_update"))
    with Session(engine) as s, s.begin():
        rows = s.execute(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)).scalars().all()
        prev = rows[seq - 2].hash
        for r in rows[seq - 1 :]:
            if r.seq == seq:
                r.payload = {**r.payload, "by": "mallory"}
            r.prev_hash = prev
            r.hash = entry_hash(r.seq, format_time(r.at), r.node, r.kind, r.payload, prev)
            prev = r.hash


def test_a_recomputed_chain_passes_alone_and_fails_against_its_anchors(populated: Engine) -> None:
    anchored = [AnchorHead(e.seq, e.hash, NODE, e.seq) for e in chain(populated)]
    _rewrite_entry(populated, 3)
    report = self_report(populated, {"anchors.jsonl": anchored})
    assert report.chain.ok  # consistent on its own: only the anchors show it
    assert report.exit_code == 5
    assert "rewritten" in "\n".join(report.lines())


def test_verify_self_reports_an_edited_entry_as_a_broken_chain(populated: Engine) -> None:
    with populated.begin() as conn:
        if populated.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_no_update"))
        conn.execute(text("UPDATE audit SET kind = 'nothing' WHERE seq = 2"))
    report = self_report(populated)
    assert report.exit_code == 1
    assert "entry 2" in report.lines()[0]


def test_the_audit_chain_serialises_concurrent_writers(migrated: Engine) -> None:
    """Two sessions appending: the second waits for the first (advisory lock on
    PostgreSQL, BEGIN IMMEDIATE on SQLite), so the chain never forks."""
    import threading

    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(5):
                change(
                    migrated,
                    lambda s, j=j: audit.append(
                        s,
                        node=NODE,
                        kind="probe",
                        payload={"writer": i, "n": j},
                        at=T0 + dt.timedelta(seconds=j),
                    ),
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,), name=f"writer-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    entries = chain(migrated)
    assert len(entries) == 11
    assert check_chain(entries).ok
