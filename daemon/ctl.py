"""``cryoctl``: the operator's and clinical engineer's client.

Live commands talk to a running daemon over its Unix socket. ``procedures``,
``show``, ``export``, ``report`` and ``verify`` also work offline on a
database file (``--db PATH``) with no daemon, since researchers and auditors
work on copies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryod import __version__

from .control import ControlError, call

__all__ = ["main"]

DEFAULT_SOCKET = os.environ.get("CRYOD_SOCKET", "/run/cryod/control.sock")

INDICATIONS = ["mortons_neuroma", "stump_neuroma", "other_traumatic_neuroma", "other"]

# exit statuses (docs/cli.md)
EXIT_OK = 0
EXIT_REFUSED = 1  # refused by the daemon, not found, audit chain broken, bad value
EXIT_USAGE = 2  # argparse's own status for a bad command line
EXIT_NO_DAEMON = 3
EXIT_BAD_FILE = 4  # a file named on the command line (--db, --log, --out) cannot be used

EXIT_CODES = f"""exit status:
  {EXIT_OK}  success (verify: the audit chain is intact)
  {EXIT_REFUSED}  refused by the daemon, no such procedure, audit chain broken, or a bad value
  {EXIT_USAGE}  bad command line
  {EXIT_NO_DAEMON}  cannot reach cryod on its socket
  {EXIT_BAD_FILE}  a file named with --db, --log or --out cannot be used: missing, empty, not
     SQLite, corrupt, not a cryod database, at another schema revision, not writable
     (one line says which)
"""


class _UnusableFile(Exception):
    """A file named on the command line that cannot be read; the message is one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cryoctl",
        description="Operate and inspect cryod.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"cryoctl {__version__}")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help=f"daemon socket ({DEFAULT_SOCKET})")
    p.add_argument("--console", default=None, help="console id (needed with several consoles)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the daemon")
    sub = p.add_subparsers(dest="cmd", required=True)

    st = sub.add_parser("status", help="daemon, console, engine and alarm status")
    st.add_argument("--json", action="store_true")

    proc = sub.add_parser("procedure", help="open or close a procedure")
    psub = proc.add_subparsers(dest="pcmd", required=True)
    po = psub.add_parser("open")
    po.add_argument("--patient-ref", required=True, help="pseudonymous reference, never a name")
    po.add_argument("--indication", required=True, choices=INDICATIONS)
    po.add_argument("--indication-other", default=None)
    po.add_argument("--site", required=True, help="anatomical site")
    po.add_argument(
        "--side", required=True, choices=["left", "right", "bilateral", "midline", "na"]
    )
    po.add_argument("--imaging", required=True, choices=["ultrasound", "ct", "mri"])
    po.add_argument("--anaesthesia", required=True, choices=["local", "regional", "general"])
    po.add_argument("--operator", default=None)
    po.add_argument("--study-id", default=None)
    po.add_argument("--probe-model", default=None)
    po.add_argument("--probe-lot", default=None)
    pc = psub.add_parser("close")
    pc.add_argument("--notes", default=None)
    pc.add_argument(
        "--adverse-event",
        action="append",
        default=[],
        metavar="CODE[:TEXT]",
        help="pain, worsening_of_symptoms, infection, damage_to_adjacent_structures, "
        "further_intervention_needed, other:TEXT (repeatable; none given = no adverse events)",
    )

    run = sub.add_parser("run", help="run a protocol")
    run.add_argument("protocol", help="built-in name or path to a protocol TOML")
    run.add_argument("--probes", default="1", help="e.g. 1,2")
    fr = sub.add_parser("freeze", help="single ad-hoc freeze (e.g. repositioning)")
    fr.add_argument("--probe", type=int, required=True)
    fr.add_argument("--seconds", type=float, required=True)
    th = sub.add_parser("thaw", help="single ad-hoc thaw")
    th.add_argument("--probe", type=int, required=True)
    th.add_argument("--seconds", type=float, default=None)
    th.add_argument("--mode", choices=["passive", "active"], default="passive")
    sub.add_parser("stop", help="end the current phase")
    sub.add_parser("continue", help="leave a hold point")
    ex = sub.add_parser("extend", help="extend the current freeze within limits")
    ex.add_argument("seconds", type=float)
    sub.add_parser("abort", help="safe state now")
    ack = sub.add_parser("ack", help="acknowledge alarms")
    ack.add_argument("alarm", nargs="?", default=None, help="(all active alarms are acknowledged)")
    sub.add_parser("reset", help="reset after a fault once its cause is gone")

    for name, help_ in (
        ("procedures", "list procedures"),
        ("show", "one procedure with its cycles and alarms"),
        ("export", "export for a research registry"),
        ("verify", "walk the audit hash chain"),
        ("report", "procedure report (HTML, PDF or PNG by extension)"),
    ):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--db", default=None, help="work offline on a database file")
        if name in ("show", "report"):
            sp.add_argument("id", type=int)
        if name == "export":
            sp.add_argument("id", type=int, nargs="?", default=None)
            sp.add_argument("--format", choices=["json", "csv"], default="json")
            sp.add_argument("--out", default=None)
        if name == "report":
            sp.add_argument("--out", required=True)
        if name == "verify":
            sp.add_argument(
                "--head", default=None, help="expected chain head SEQ:HASH (from the daemon's log)"
            )
            sp.add_argument(
                "--log", default=None, help="a log file to take the latest chain head from"
            )
    w = sub.add_parser("watch", help="live view")
    w.add_argument("--hz", type=float, default=4.0)
    return p


def _adverse(items: list[str]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        code, _, text = item.partition(":")
        entry: dict[str, Any] = {"code": code}
        if text:
            entry["text"] = text
        out.append(entry)
    return out


def _live_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    a: dict[str, Any] = {}
    if args.console:
        a["console"] = args.console
    c = args.cmd
    if c == "procedure":
        if args.pcmd == "open":
            for k in (
                "patient_ref",
                "indication",
                "indication_other",
                "site",
                "side",
                "imaging",
                "anaesthesia",
                "operator",
                "study_id",
                "probe_model",
                "probe_lot",
            ):
                v = getattr(args, k)
                if v is not None:
                    a[k] = v
            return "procedure_open", a
        a["notes"] = args.notes
        a["adverse_events"] = _adverse(args.adverse_event)
        return "procedure_close", a
    if c == "run":
        a["protocol"] = args.protocol
        a["probes"] = [int(x) for x in args.probes.split(",") if x.strip()]
        return "run", a
    if c == "freeze":
        a.update(probe=args.probe, seconds=args.seconds)
        return "freeze", a
    if c == "thaw":
        a.update(probe=args.probe, seconds=args.seconds, mode=args.mode)
        return "thaw", a
    if c == "extend":
        a["seconds"] = args.seconds
        return "extend", a
    return c, a


def _print_status(st: dict[str, Any]) -> None:
    print(
        f"cryod {st['version']}  session {st['session']}  site {st['site']}  up {st['uptime_s']} s"
    )
    w = st.get("writer") or {}
    print(
        f"log: {'healthy' if w.get('healthy') else 'UNHEALTHY'} "
        f"({w.get('reason')}), samples written {w.get('written')}, dropped {w.get('dropped')}"
    )
    for m in st.get("mqtt") or []:
        print(
            f"mqtt {m.get('broker')}: {m.get('state')}"
            + (f" (last error: {m.get('last_error')})" if m.get("last_error") else "")
        )
    if st.get("mqtt") is None:
        print("mqtt: not configured")
    for c in st["consoles"]:
        link = c["link"]
        print(
            f"console {c['id']} [{c['driver']}] link "
            f"{'up' if link['connected'] else 'DOWN'} (timeouts {link['timeouts']}, "
            f"bad frames {link['bad_frames']}, reconnects {link['reconnects']})"
        )
        e = c["engine"]
        rem = e.get("remaining_s")
        print(
            f"  engine {e['state']}"
            + (f" step {e.get('step')}/{e.get('steps')} {e.get('phase')}" if "step" in e else "")
            + (f", {rem:.1f} s left" if rem is not None else "")
            + (f" ({e['reason']})" if e.get("reason") else "")
        )
        proc = c.get("procedure")
        print(f"  procedure {proc['id'] if proc else 'none open'}")
        snap = c.get("snapshot")
        if snap:
            sup = snap["supply_kpa"]
            print(
                f"  supply {sup['value']} kPa ({sup['validity']}), master "
                f"{'open' if snap['master_open'] else 'closed'}, lease "
                f"{'armed' if snap['lease']['armed'] else 'DISARMED'} "
                f"{snap['lease']['timeout_ms']} ms, faults {snap['faults'] or 'none'}"
            )
            for p in snap["probes"]:
                tip = "---" if p["tip_c"] is None else f"{p['tip_c']:.1f} C"
                print(
                    f"  probe {p['probe']}: {tip} ({p['validity']})"
                    + (" FREEZE" if p["freeze_open"] else "")
                    + (" THAW" if p["thaw_on"] else "")
                )
        for a in c["alarms"]:
            print(
                f"  ALARM {a['priority'].upper()} {a['code']}"
                + (f" probe {a['probe']}" if a["probe"] else "")
                + f": {a['message']}"
                + (" (acked)" if a["acked"] else "")
            )


def _offline(args: argparse.Namespace) -> int:
    from .store import audit, export, queries
    from .store.db import open_for_reading

    with open_for_reading(args.db) as db:
        if args.cmd == "procedures":
            _print_json([p.as_dict() for p in queries.list_procedures(db)])
            return EXIT_OK
        if args.cmd == "show":
            try:
                _print_json(queries.show_procedure(db, args.id).as_dict())
            except queries.NotFound as exc:
                print(f"cryoctl: {exc}", file=sys.stderr)
                return EXIT_REFUSED
            return EXIT_OK
        if args.cmd == "export":
            return _write_export(
                args,
                export.export_csv(db, args.id)
                if args.format == "csv"
                else export.export_json(db, args.id),
            )
        if args.cmd == "verify":
            head = _expected_head(args)
            res = audit.verify(db, expected_head=head)
            return _print_verify(res.ok, res.first_bad_seq, res.reason)
        if args.cmd == "report":
            from .report import write_report

            out = write_report(args.db, args.id, args.out)
            print(out)
            return EXIT_OK
    return EXIT_USAGE


def _expected_head(args: argparse.Namespace) -> Any:
    from .store import audit

    if args.head:
        seq, _, h = args.head.partition(":")
        return audit.AuditHead(int(seq), h)
    if args.log:
        # every head the daemon logged: a recomputed chain is then named from its first row
        try:
            text = Path(args.log).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise _UnusableFile(f"{args.log}: cannot read the log ({exc.strerror})") from exc
        heads = audit.heads_from_log(text.splitlines())
        return heads or None
    return None


def _print_verify(ok: bool, first_bad: Any, reason: Any) -> int:
    if ok:
        print("audit chain ok")
        return EXIT_OK
    print(f"audit chain BROKEN at row {first_bad}: {reason}")
    return EXIT_REFUSED


def _write_export(args: argparse.Namespace, data: Any) -> int:
    text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"cryoctl: {args.out}: cannot write the export ({exc.strerror})", file=sys.stderr)
            return EXIT_BAD_FILE
        print(args.out)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    offline_capable = ("procedures", "show", "export", "verify", "report")
    if args.cmd in offline_capable and getattr(args, "db", None):
        from .store.errors import UnusableDatabase

        try:
            return _offline(args)
        except UnusableDatabase as exc:
            print(f"cryoctl: {exc.message}", file=sys.stderr)
            return EXIT_BAD_FILE
        except _UnusableFile as exc:
            print(f"cryoctl: {exc}", file=sys.stderr)
            return EXIT_BAD_FILE
        except (ValueError, LookupError) as exc:
            print(f"cryoctl: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    if args.cmd == "watch":
        from .watch import run_watch

        return run_watch(args.socket, refresh_hz=args.hz)
    if args.cmd == "report":
        print("cryoctl report needs --db PATH (the daemon's database or a copy)", file=sys.stderr)
        return EXIT_USAGE
    cmd, req = _live_request(args)
    if cmd == "verify":
        req = {}
    if cmd == "show":
        req["id"] = args.id
    if cmd == "export":
        req.update(id=args.id, format=args.format)
    try:
        result = asyncio.run(call(args.socket, cmd, req, timeout_s=args.timeout))
    except ControlError as exc:
        print(f"cryoctl: refused: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, TimeoutError) as exc:
        print(f"cryoctl: cannot reach cryod at {args.socket}: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    if cmd == "status" and not args.json:
        _print_status(result)
    elif cmd == "verify":
        return _print_verify(result["ok"], result["first_bad_seq"], result["reason"])
    elif cmd == "export":
        return _write_export(args, result)
    else:
        _print_json(result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
