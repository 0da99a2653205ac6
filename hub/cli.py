"""``cryohub``: the study collector's command line.

Every command that changes data asks who is acting (``--as USER``, then that
user's password) and records it in the collector's audit chain; the first
admin is the one exception (``user add`` on a database without users).
Passwords are read without echo, or one per line from ``--password-fd N``
(scripts, tests), never from the command line. After each change the new
chain head is anchored (journal, anchor file).

Exit codes: 0 ok; 1 verify: a chain is not consistent; 2 bad input (config,
arguments, unknown or existing user/room, unacceptable password); 3 the
database cannot be reached or is not at this collector's schema (run
``cryohub migrate``); 4 verify: a table does not match the chain; 5 verify:
the chain disagrees with an anchor; 6 the change was committed but its head
could not be anchored; 7 not permitted (unknown or disabled user, wrong
password, no grant covering the change). docs/collector.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryod import __version__

__all__ = ["main"]

EXIT_BAD_INPUT = 2
EXIT_DATABASE = 3
EXIT_NOT_ANCHORED = 6
EXIT_NOT_PERMITTED = 7


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("CRYOHUB_CONFIG", "/etc/cryohub/cryohub.toml")),
        help="collector config (TOML; default $CRYOHUB_CONFIG or /etc/cryohub/cryohub.toml)",
    )
    acting = argparse.ArgumentParser(add_help=False)
    acting.add_argument("--as", dest="as_user", metavar="USER", help="who is acting")
    acting.add_argument(
        "--password-fd",
        type=int,
        metavar="FD",
        help="read passwords one per line from this descriptor instead of the terminal",
    )

    p = argparse.ArgumentParser(
        prog="cryohub",
        description="Study collector: every room's record in one study database "
        "(research use only: NICE IPG747).",
    )
    p.add_argument("--version", action="version", version=f"cryohub {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    chk = sub.add_parser("check-config", help="validate a config; exit 0, or 2 listing problems")
    chk.add_argument("file", type=Path)

    sub.add_parser("migrate", parents=[common], help="create the database or bring it to head")

    user = sub.add_parser("user", help="people who use the collector").add_subparsers(
        dest="user_cmd", required=True
    )
    add = user.add_parser("add", parents=[common, acting], help="add a user")
    add.add_argument("name")
    add.add_argument(
        "--role",
        action="append",
        required=True,
        choices=["admin", "coordinator", "investigator", "monitor"],
        help="a role (repeatable)",
    )
    add.add_argument("--study", help="scope the roles to one study")
    add.add_argument("--site", help="scope the roles to one site")
    pw = user.add_parser(
        "passwd", parents=[common, acting], help="set a password (yours by default)"
    )
    pw.add_argument("name")
    dis = user.add_parser("disable", parents=[common, acting], help="disable a user")
    dis.add_argument("name")
    ul = user.add_parser("list", parents=[common], help="list users")
    ul.add_argument("--json", action="store_true")

    room = sub.add_parser("room", help="rooms (nodes) that send their record").add_subparsers(
        dest="room_cmd", required=True
    )
    radd = room.add_parser("add", parents=[common, acting], help="register a room")
    radd.add_argument("node")
    radd.add_argument("--site", required=True)
    who = radd.add_mutually_exclusive_group()
    who.add_argument("--credential", help="the broker user the room publishes as")
    who.add_argument("--cert-sha256", help="SHA-256 fingerprint of the room's client certificate")
    radd.add_argument(
        "--first-seq",
        type=int,
        default=1,
        help="the first entry of the room's chain the collector holds (default 1: all)",
    )
    radd.add_argument("--first-hash", help="that entry's hash (needed after entry 1)")
    rl = room.add_parser("list", parents=[common], help="list rooms")
    rl.add_argument("--json", action="store_true")

    ver = sub.add_parser("verify", parents=[common], help="verify the collector's data")
    target = ver.add_mutually_exclusive_group(required=True)
    target.add_argument("node", nargs="?", help="a room: re-hash the collector's copy")
    target.add_argument("--all", action="store_true", help="every room")
    target.add_argument("--self", dest="self_", action="store_true", help="the collector's chain")
    ver.add_argument(
        "--log",
        action="append",
        default=[],
        type=Path,
        help="with --self: also a journal export holding audit_head lines (repeatable)",
    )
    ver.add_argument("--json", action="store_true")

    # ---- ingest (issue 21: cryohub run, gaps, heads export) ----
    run = sub.add_parser("run", parents=[common], help="the ingest service (systemd ExecStart)")
    run.add_argument(
        "--stats-file",
        type=Path,
        help="write counters and latencies here as JSON every 2 s and at exit",
    )
    gaps = sub.add_parser(
        "gaps", parents=[common], help="open gaps and held messages per room, with the repair"
    )
    gaps.add_argument("node", nargs="?", help="one room (default: every room)")
    gaps.add_argument("--json", action="store_true")
    heads = sub.add_parser("heads", help="the rooms' chain heads the collector saw")
    heads_sub = heads.add_subparsers(dest="heads_cmd", required=True)
    hexp = heads_sub.add_parser(
        "export",
        parents=[common],
        help="write a room's heads as anchor lines for `cryoctl verify --anchors` at the room",
    )
    hexp.add_argument("node")
    hexp.add_argument("--out", type=Path, help="file to write (default: standard output)")

    from .followup_cli import add_parsers as followup_parsers  # followup, withdraw, export, summary

    followup_parsers(sub, common, acting)

    # ---- web (issue 23): the study's web app, docs/web.md ----
    web = sub.add_parser("web", parents=[common], help="serve the study web app (read-only board)")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    web.add_argument("--port", type=int, default=8080)
    web.add_argument(
        "--behind-tls",
        action="store_true",
        help="served through a TLS reverse proxy: Secure cookies, HSTS, X-Forwarded-For",
    )
    web.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="with --behind-tls: the proxy addresses trusted for X-Forwarded-For",
    )
    web.add_argument("--idle-min", type=float, default=15.0, help="idle timeout, minutes")
    web.add_argument("--timezone", default="UTC", help="IANA zone the pages show times in")
    web.add_argument(
        "--no-telemetry", action="store_true", help="no board subscription to [broker]"
    )

    # ---- the whole study on one machine (issue 22: cryohub demo) ----
    from .demo import add_parser as demo_parser

    demo_parser(sub)
    return p


# ---- shared plumbing ------------------------------------------------------------------------
def _err(msg: str) -> None:
    print(f"cryohub: {msg}", file=sys.stderr)


class _Open:
    """The loaded config and an engine on a database at head (disposed on exit)."""

    def __init__(self, config: Path, *, at_head: bool = True) -> None:
        from .config import load_config
        from .store.db import make_engine
        from .store.migrate import require_head

        self.loaded = load_config(config)
        self.engine = make_engine(
            self.loaded.url, password_file=self.loaded.cfg.database.password_file
        )
        try:
            if at_head:
                require_head(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    def __enter__(self) -> _Open:
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()


def _anchor(ctx: _Open, head: Any) -> int:
    from .anchors import anchor_head

    cfg = ctx.loaded.cfg
    result = anchor_head(
        ctx.loaded.node,
        head,
        anchor_file=cfg.anchors.file,
        journal_socket=cfg.anchors.journal_socket,
        at=_now(),
    )
    for failure in result.failures:
        _err(f"recorded as entry {head.seq}, but not anchored: {failure}")
    # the anchor file is the route the config names; the journal socket may be absent
    file_failed = any(f.startswith("anchor file") for f in result.failures)
    return EXIT_NOT_ANCHORED if file_failed else 0


def _change(
    args: argparse.Namespace,
    new_password_for: str | None,
    apply: Callable[..., Any],
    done: Callable[[Any], str],
) -> int:
    """Who is acting, their password (and a new one), then the change and its entry."""
    from sqlalchemy.orm import Session

    from . import admin
    from .passwords import PasswordSource, hash_password
    from .store.db import writer

    passwords = PasswordSource(fd=args.password_fd)
    with _Open(args.config) as ctx:
        actor_password = None
        if args.as_user is not None:
            actor_password = passwords.read(f"password for {args.as_user}")
        new_hash = None
        if new_password_for is not None:
            new_hash = hash_password(passwords.new(f"new password for {new_password_for}"))
        with Session(writer(ctx.engine)) as session, session.begin():
            if args.as_user is None:
                actor = admin.bootstrap(session)
                if actor is None:
                    raise admin.NotPermitted("who is acting? --as USER (then that user's password)")
            else:
                assert actor_password is not None
                actor = admin.authenticate(session, args.as_user, actor_password)
            head = apply(session, actor, new_hash, ctx.loaded.node)
        print(done(head))
        return _anchor(ctx, head)


# ---- commands ---------------------------------------------------------------------------------
def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import load_config

    loaded = load_config(args.file)
    n = len(loaded.profiles)
    print(f"{args.file}: ok ({n} study profile(s), database {loaded.url.drivername})")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .store.migrate import upgrade

    with _Open(args.config, at_head=False) as ctx:
        report = upgrade(ctx.engine, node=ctx.loaded.node, now=_now())
        if report.head is None:
            print(f"database already at {report.to_revision}")
            return 0
        what = (
            "created" if report.from_revision is None else f"upgraded from {report.from_revision}"
        )
        print(f"database {what} at {report.to_revision} (audit entry {report.head.seq})")
        return _anchor(ctx, report.head)


def cmd_user(args: argparse.Namespace) -> int:
    from . import admin
    from .access import Grant, Role

    if args.user_cmd == "list":
        return _user_list(args)
    if args.user_cmd == "add":
        grants = tuple(Grant(Role(r), args.study, args.site) for r in args.role)
        return _change(
            args,
            args.name,
            lambda s, actor, pw, node: admin.add_user(
                s, actor, name=args.name, password_hash=pw, grants=grants, now=_now(), node=node
            ),
            lambda head: (
                f"user {args.name} added ({', '.join(map(str, grants))}; entry {head.seq})"
            ),
        )
    if args.user_cmd == "passwd":
        if args.as_user is None:
            args.as_user = args.name  # your own password: your current one first
        return _change(
            args,
            args.name,
            lambda s, actor, pw, node: admin.set_password(
                s, actor, name=args.name, password_hash=pw, now=_now(), node=node
            ),
            lambda head: f"password of {args.name} changed (entry {head.seq})",
        )
    if args.user_cmd == "disable":
        return _change(
            args,
            None,
            lambda s, actor, _pw, node: admin.disable_user(
                s, actor, name=args.name, now=_now(), node=node
            ),
            lambda head: f"user {args.name} disabled (entry {head.seq})",
        )
    return EXIT_BAD_INPUT


def _user_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .admin import grants_of
    from .store.models import User

    with _Open(args.config) as ctx, Session(ctx.engine) as s:
        users: list[dict[str, Any]] = [
            {
                "name": u.name,
                "roles": [str(g) for g in grants_of(s, u)],
                "disabled": u.disabled_at is not None,
                "created_at": u.created_at.isoformat(),
                "created_by": u.created_by,
            }
            for u in s.execute(select(User).order_by(User.name)).scalars()
        ]
    if args.json:
        print(json.dumps(users, indent=2))
    else:
        for u in users:
            state = "disabled" if u["disabled"] else "active"
            print(f"{u['name']:<24} {state:<9} {'; '.join(u['roles'])}")
    return 0


def cmd_room(args: argparse.Namespace) -> int:
    from . import admin

    if args.room_cmd == "list":
        return _room_list(args)
    return _change(
        args,
        None,
        lambda s, actor, _pw, node: admin.add_room(
            s,
            actor,
            room=args.node,
            site=args.site,
            credential=args.credential,
            cert_sha256=args.cert_sha256,
            first_seq=args.first_seq,
            first_hash=args.first_hash,
            now=_now(),
            node=node,
        ),
        lambda head: f"room {args.node} registered at site {args.site} (entry {head.seq})",
    )


def _room_list(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from .store.models import Gap, Held, Quarantined, ReceivedEntry, Room

    with _Open(args.config) as ctx, Session(ctx.engine) as s:
        rooms: list[dict[str, Any]] = []
        for r in s.execute(select(Room).order_by(Room.site, Room.node)).scalars():
            last = s.execute(
                select(func.max(ReceivedEntry.seq)).where(ReceivedEntry.node == r.node)
            ).scalar_one()
            held = s.execute(
                select(func.count()).select_from(Held).where(Held.node == r.node)
            ).scalar_one()
            gaps = [
                (g.first_seq, g.last_seq)
                for g in s.execute(
                    select(Gap).where(Gap.node == r.node, Gap.closed_at.is_(None))
                ).scalars()
            ]
            quarantined = s.execute(
                select(func.count()).select_from(Quarantined).where(Quarantined.node == r.node)
            ).scalar_one()
            rooms.append(
                {
                    "node": r.node,
                    "site": r.site,
                    "first_seq": r.first_seq,
                    "last_seq": last,
                    "held": held,
                    "open_gaps": [
                        {"from": a, "to": b, "repair": f"cryoctl record resend --from {a} --to {b}"}
                        for a, b in gaps
                    ],
                    "quarantined": quarantined,
                    "registered_at": r.registered_at.isoformat(),
                    "registered_by": r.registered_by,
                }
            )
    if args.json:
        print(json.dumps(rooms, indent=2))
        return 0
    if not rooms:
        print("no rooms registered")
    for room in rooms:
        upto = "nothing yet" if room["last_seq"] is None else f"to seq {room['last_seq']}"
        print(
            f"{room['node']:<24} site {room['site']:<16} {upto}; held {room['held']}; "
            f"quarantined {room['quarantined']}"
        )
        for g in room["open_gaps"]:
            print(f"  gap {g['from']}..{g['to']}: at the room, {g['repair']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.log and not args.self_:
        _err("--log goes with --self")
        return EXIT_BAD_INPUT
    with _Open(args.config) as ctx:
        reports = _verify_self(ctx, args.log) if args.self_ else _verify_rooms(ctx, args)
    if reports is None:
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        for r in reports:
            for line in r.lines():
                print(line)
    codes = [r.exit_code for r in reports if r.exit_code]
    return min(codes) if codes else 0


def _verify_self(ctx: _Open, logs: list[Path]) -> list[Any] | None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from cryod.integrity import parse_heads

    from .admin import grants_of
    from .anchors import AnchorFile
    from .store import audit
    from .store.models import Room, User
    from .verify import StoredRoom, StoredUser, check_self

    node = ctx.loaded.node
    with Session(ctx.engine) as s:
        entries = audit.entries(s)
        users = [
            StoredUser(
                u.name,
                frozenset((g.role.value, g.study, g.site) for g in grants_of(s, u)),
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
    anchor_file = ctx.loaded.anchor_file
    sources = {str(anchor_file): AnchorFile(anchor_file).heads(node)}
    for log in logs:
        try:
            with log.open(encoding="utf-8", errors="replace") as fh:
                sources[str(log)] = parse_heads(fh, node)
        except OSError as exc:
            _err(f"{log}: cannot read: {exc.strerror}")
            return None
    from .followup import check_followup
    from .followup_store import stored_followup

    with Session(ctx.engine) as s:
        followup = check_followup(stored_followup(s), entries)
    return [_WithFollowUp(check_self(node, entries, users, rooms, sources), followup)]


class _WithFollowUp:
    """``verify --self``: the chain, users and rooms, then the follow-up tables (issue 22:
    each row re-hashed against its entry, redactions listed apart; a mismatch is exit 4)."""

    def __init__(self, report: Any, followup: Any) -> None:
        self.report = report
        self.followup = followup

    @property
    def exit_code(self) -> int:
        codes = [c for c in (self.report.exit_code, 0 if self.followup.ok else 4) if c]
        return min(codes) if codes else 0

    def lines(self) -> list[str]:
        return [*self.report.lines(), *self.followup.lines()]

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.report.as_dict())
        out["followup"] = self.followup.as_dict()
        out["exit_code"] = self.exit_code
        return dict(out)


def _verify_rooms(ctx: _Open, args: argparse.Namespace) -> list[Any] | None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .store.models import Room
    from .store.received import room_copy
    from .verify import check_room_copy

    out = []
    with Session(ctx.engine) as s:
        nodes = (
            list(s.execute(select(Room.node).order_by(Room.node)).scalars())
            if args.all
            else [args.node]
        )
        for node in nodes:
            copy = room_copy(s, node)
            if copy is None:
                _err(f"no room {node!r} is registered")
                return None
            out.append(
                check_room_copy(
                    copy.registration, copy.entries, copy.rows, copy.blocks, copy.withheld
                )
            )
    return out


# ---- ingest (issue 21: cryohub run, gaps, heads export) -------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from .service import IngestService, broker_settings

    with _Open(args.config) as ctx:
        broker_settings(ctx.loaded)  # a config without [broker] is exit 2 before anything
        logging.basicConfig(
            level=ctx.loaded.cfg.collector.log_level.upper(),
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        logging.getLogger("mqtt").setLevel(logging.WARNING)
        service = IngestService(ctx.loaded, ctx.engine, stats_file=args.stats_file)
        return asyncio.run(service.run())


def cmd_gaps(args: argparse.Namespace) -> int:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .ingest import repair_command
    from .store.models import Held, Room
    from .store.received import open_gaps

    with _Open(args.config) as ctx, Session(ctx.engine) as s:
        nodes = list(s.execute(select(Room.node).order_by(Room.node)).scalars())
        if args.node is not None:
            if args.node not in nodes:
                _err(f"no room {args.node!r} is registered")
                return EXIT_BAD_INPUT
            nodes = [args.node]
        report: list[dict[str, Any]] = []
        for node in nodes:
            gaps = [
                {"from": g.first_seq, "to": g.last_seq, "detected_at": g.detected_at.isoformat(),
                 "repair": repair_command(g.first_seq, g.last_seq)}
                for g in open_gaps(s, node)
            ]  # fmt: skip
            held = [
                {"seq": h.seq, "reason": h.reason, "detail": h.detail}
                for h in s.execute(
                    select(Held).where(Held.node == node).order_by(Held.seq)
                ).scalars()
            ]
            report.append({"node": node, "gaps": gaps, "held": held})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for r in report:
        if not r["gaps"] and not r["held"]:
            print(f"{r['node']}: no gaps, nothing held")
            continue
        print(f"{r['node']}: {len(r['gaps'])} gap(s), {len(r['held'])} held")
        for g in r["gaps"]:
            print(f"  missing {g['from']}..{g['to']}: at the room, {g['repair']}")
        for h in r["held"]:
            if h["reason"] == "profile":
                print(f"  held {h['seq']}: {h['detail']}")
    return 0


def cmd_heads(args: argparse.Namespace) -> int:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from cryod.integrity import Head

    from .anchors import anchor_line
    from .store.models import ReceivedEntry, Room

    with _Open(args.config) as ctx, Session(ctx.engine) as s:
        if s.get(Room, args.node) is None:
            _err(f"no room {args.node!r} is registered")
            return EXIT_BAD_INPUT
        lines = [
            anchor_line(args.node, Head(r.seq, r.hash), r.received_at) + "\n"
            for r in s.execute(
                select(ReceivedEntry.seq, ReceivedEntry.hash, ReceivedEntry.received_at)
                .where(ReceivedEntry.node == args.node)
                .order_by(ReceivedEntry.seq)
            )
        ]
    if args.out is None:
        sys.stdout.writelines(lines)
    else:
        try:
            args.out.write_text("".join(lines), encoding="utf-8")
        except OSError as exc:
            _err(f"{args.out}: cannot write: {exc.strerror}")
            return EXIT_BAD_INPUT
        print(f"{len(lines)} head(s) of {args.node} written to {args.out}", file=sys.stderr)
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    import zoneinfo

    from .config import load_config

    if not 0 < args.port < 65536:
        _err(f"--port {args.port}: give a port from 1 to 65535")
        return EXIT_BAD_INPUT
    if not 0 < args.idle_min <= 24 * 60:
        _err(f"--idle-min {args.idle_min:g}: give minutes more than 0, at most {24 * 60}")
        return EXIT_BAD_INPUT
    try:
        if args.timezone != "UTC":
            zoneinfo.ZoneInfo(args.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        _err(f"--timezone {args.timezone!r}: not an IANA time zone")
        return EXIT_BAD_INPUT
    from .web.server import ListenError, ServeOptions, serve

    try:
        serve(
            load_config(args.config),
            ServeOptions(
                host=args.host,
                port=args.port,
                behind_tls=args.behind_tls,
                forwarded_allow_ips=args.forwarded_allow_ips,
                idle_min=args.idle_min,
                timezone=args.timezone,
                telemetry=not args.no_telemetry,
            ),
        )
    except ListenError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check-config": cmd_check_config,
    "migrate": cmd_migrate,
    "user": cmd_user,
    "room": cmd_room,
    "verify": cmd_verify,
    "run": cmd_run,
    "gaps": cmd_gaps,
    "heads": cmd_heads,
    "web": cmd_web,
}


def _followup_commands() -> None:
    from .followup_cli import COMMANDS as FOLLOWUP

    COMMANDS.update(FOLLOWUP)
    from .demo import cmd_demo

    COMMANDS["demo"] = cmd_demo


_followup_commands()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sqlalchemy.exc import DBAPIError

    from .admin import NotPermitted, Refused
    from .config import ConfigError
    from .passwords import PasswordError
    from .store.db import StoreError

    try:
        return COMMANDS[args.cmd](args)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Refused, PasswordError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except NotPermitted as exc:
        _err(f"not permitted: {exc}")
        return EXIT_NOT_PERMITTED
    except StoreError as exc:
        _err(str(exc))
        return EXIT_DATABASE
    except DBAPIError as exc:
        orig = getattr(exc, "orig", None) or exc
        _err(f"database error: {(str(orig).strip().splitlines() or ['?'])[0]}")
        return EXIT_DATABASE


if __name__ == "__main__":
    sys.exit(main())
