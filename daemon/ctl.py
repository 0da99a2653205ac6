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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryod import __version__

from .control import ControlError, call
from .procedure_fields import ADVERSE_EVENT_CODES, OPEN_FIELDS

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["main"]

T = TypeVar("T")

DEFAULT_SOCKET = os.environ.get("CRYOD_SOCKET", "/run/cryod/control.sock")

# exit statuses (docs/cli.md, docs/integrity.md); one meaning each across commands.
# verify's own are record_check.VerifyExit (tests/security/test_bad_database.py
# keeps the two equal)
EXIT_OK = 0
EXIT_REFUSED = 1  # refused by the daemon, no such procedure or row, a bad value; chain broken
EXIT_USAGE = 2  # a bad command line: argparse's own status, a malformed --head or --row
EXIT_NO_DAEMON = 3
EXIT_TABLES = 4  # verify: a research row or a sample batch does not match the chain
EXIT_ANCHORS = 5  # verify: the chain disagrees with an anchor
EXIT_EXPORT = 6  # verify: an export does not match what it carries
EXIT_BAD_FILE = 7  # a file named on the command line cannot be used

EXIT_CODES = f"""exit status:
  {EXIT_OK}  success (verify: every check passed)
  {EXIT_REFUSED}  refused by the daemon, no such procedure or row, or a bad value
     (verify: the chain is not consistent on its own)
  {EXIT_USAGE}  bad command line (also a malformed --head SEQ:HASH or --row TABLE:ID)
  {EXIT_NO_DAEMON}  cannot reach cryod on its socket
  {EXIT_TABLES}  verify: a research row or sample batch does not match the chain
  {EXIT_ANCHORS}  verify: the chain disagrees with an anchor (rewritten, cut off, forked)
  {EXIT_EXPORT}  verify: an export does not match what it carries
  {EXIT_BAD_FILE}  a file named with --db, --log, --anchors, --export or --out cannot be used:
     missing, empty, not SQLite, corrupt, not a cryod database, at another schema
     revision, not a cryod export, not writable (one line says which)
"""


class BadInput(Exception):
    """A bad value on the command line: one line for the user, exit status 2."""


class UnusableFile(Exception):
    """A file named on the command line that cannot be used: one line, exit status 7."""


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
    _open_parser(psub)
    pc = psub.add_parser("close")
    pc.add_argument("--notes", default=None)
    pc.add_argument(
        "--adverse-event",
        action="append",
        default=[],
        metavar="CODE[:TEXT]",
        help=f"the quick old way, a yes/no code each ({', '.join(ADVERSE_EVENT_CODES)}; "
        "other needs :TEXT), recorded as an adverse event 'unspecified (migrated)'; "
        "record adverse events with 'cryoctl ae add' instead",
    )
    bp = sub.add_parser(
        "baseline-pain",
        help="record the baseline pain score (before the first freeze, where the study asks)",
    )
    bp.add_argument("score", type=float, help="on the study's scale (NRS 0-10 or VAS 0-100 mm)")
    bp.add_argument("--assessed-at", default=None, help="ISO 8601 with offset (default: now)")
    _ae_parser(sub)

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
        ("report", "procedure report (HTML, PDF or PNG by extension)"),
    ):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--db", default=None, help="work offline on a database file")
        if name in ("show", "report"):
            sp.add_argument("id", type=int)
        if name == "export":
            sp.add_argument("id", type=int, nargs="?", default=None)
            sp.add_argument(
                "--format",
                choices=["json", "csv", "fhir", "redcap"],
                default="json",
                help="json (cryod.export/2), csv (docs/data-dictionary.md), fhir (an R4B "
                "Bundle), redcap (a project: --out DIR gets its CSV files)",
            )
            sp.add_argument("--out", default=None, help="a file (a directory for redcap)")
        if name == "report":
            sp.add_argument("--out", required=True)
    _verify_parser(sub)
    rd = sub.add_parser(
        "redact",
        help="withdraw a procedure (or one row) from the record (offline, cryod stopped)",
        description="Erase a row's content and salt for consent reasons; the chain keeps its "
        "digest and who asked and why, and verify lists it as a redaction "
        "(docs/integrity.md). Run with cryod stopped, on its database.",
    )
    rd.add_argument("--db", required=True, help="the database (cryod stopped)")
    what = rd.add_mutually_exclusive_group(required=True)
    what.add_argument("--procedure", type=int, help="a procedure with its cycles, alarms, samples")
    what.add_argument("--row", metavar="TABLE:ID", help="one row, e.g. alarms:12")
    rd.add_argument("--by", required=True, help="who asked for it (e.g. the study's DPO)")
    rd.add_argument("--reason", required=True, help="why (e.g. consent withdrawn, ref. ...)")
    w = sub.add_parser("watch", help="live view")
    w.add_argument("--hz", type=float, default=4.0)
    _record_parser(sub)
    return p


#: the study sections' flags: flag -> (section, field, kind); kinds: str, int, float,
#: list (comma-separated), bool (yes/no)
STUDY_FLAGS: dict[str, tuple[str, str, str]] = {
    "--selection-indication": ("selection", "indication", "str"),
    "--symptom-duration-months": ("selection", "symptom_duration_months", "int"),
    "--prior-treatments": ("selection", "prior_treatments", "list"),
    "--aetiology": ("selection", "aetiology", "str"),
    "--nerve": ("selection", "nerve", "str"),
    "--web-space": ("selection", "web_space", "str"),
    "--neuroma-size-mm": ("selection", "neuroma_size_mm", "float"),
    "--imaging-modalities": ("details", "imaging", "list"),
    "--technical-success": ("details", "technical_success", "bool"),
    "--study-anaesthesia": ("details", "anaesthesia", "str"),
    "--anaesthetic-agent": ("details", "anaesthetic_agent", "str"),
    "--setting": ("details", "setting", "str"),
    "--probe-gauge": ("details", "probe_gauge", "int"),
    "--probe-count": ("details", "probe_count", "int"),
    "--probe-udi": ("details", "probe_udi", "str"),
    "--gas": ("details", "gas", "str"),
    "--treatment-number": ("details", "treatment_number", "int"),
    "--repeat-of": ("details", "repeat_of", "str"),
}

#: ``ae add``/``ae update`` flags -> adverse-event field and kind
AE_FLAGS: dict[str, tuple[str, str]] = {
    "--category": ("category", "str"),
    "--subcategory": ("subcategory", "str"),
    "--term": ("verbatim_term", "str"),
    "--onset": ("onset", "str"),
    "--resolution": ("resolution", "str"),
    "--grade": ("ctcae_grade", "int"),
    "--serious": ("serious", "bool"),
    "--criteria": ("seriousness_criteria", "list"),
    "--related-device": ("relatedness_device", "str"),
    "--related-procedure": ("relatedness_procedure", "str"),
    "--outcome": ("outcome", "str"),
    "--action": ("action_taken", "str"),
    "--further-intervention": ("further_intervention", "str"),
    "--further-intervention-date": ("further_intervention_date", "str"),
    "--yellow-card": ("yellow_card_ref", "str"),
}


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _open_parser(psub: Any) -> None:
    po = psub.add_parser(
        "open",
        help="open a procedure (under a study profile with --study)",
        description="Open a procedure. Under a study profile (--study), the profile's "
        "required selection and procedure fields must be given (flags or --from FILE.toml) "
        "and consent confirmed where the study demands it; each missing or out-of-list "
        "value is named (docs/study-profile.md).",
    )
    for f in OPEN_FIELDS:
        po.add_argument(f.flag, default=None, choices=f.codes, help=f.help)
    po.add_argument(
        "--study",
        default=None,
        help="study profile: a name shipped with cryod, or a file (.toml) cryoctl reads and sends",
    )
    po.add_argument(
        "--from",
        dest="from_file",
        default=None,
        metavar="FILE.toml",
        help="fields from a file (top level: the procedure's; [consent], [selection], "
        "[procedure]); flags given win",
    )
    po.add_argument("--consent", action="store_true", default=None, help="consent confirmed")
    po.add_argument("--consent-form", default=None, help="consent form version")
    po.add_argument(
        "--eligible",
        action="append",
        default=[],
        metavar="ITEM",
        help="an eligibility checklist item confirmed (repeatable; 'all': every item)",
    )
    po.add_argument(
        "--not-eligible", action="append", default=[], metavar="ITEM", help="an item not met"
    )
    for flag, (section, name, kind) in STUDY_FLAGS.items():
        po.add_argument(flag, default=None, help=f"{section}.{name} ({kind})")


def _ae_parser(sub: Any) -> None:
    ae = sub.add_parser(
        "ae",
        help="adverse events of the open procedure (add, update, list)",
        description="Adverse events noticed while the procedure is open, up to its close; "
        "after close they are the study collector's to record. Codes: "
        "docs/data-dictionary.md.",
    )
    asub = ae.add_subparsers(dest="acmd", required=True)
    add = asub.add_parser("add", help="record an adverse event")
    upd = asub.add_parser("update", help="change fields of an adverse event")
    upd.add_argument("ae_id", type=int)
    for p in (add, upd):
        for flag, (name, kind) in AE_FLAGS.items():
            p.add_argument(flag, default=None, help=f"{name} ({kind})")
        p.add_argument("--from", dest="from_file", default=None, metavar="FILE.toml")
    ls = asub.add_parser("list", help="the adverse events of a procedure")
    ls.add_argument("--procedure", type=int, default=None, help="default: the open one")
    ls.add_argument("--db", default=None, help="work offline on a database file")


def _value(flag: str, kind: str, text: str) -> Any:
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise BadInput(f"{flag} {text!r}: not a whole number") from None
    if kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise BadInput(f"{flag} {text!r}: not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise BadInput(f"{flag} {text!r}: not a finite number")
        return value
    if kind == "list":
        return [] if text.strip() in ("", "none") else [x.strip() for x in text.split(",")]
    if kind == "bool":
        if text.lower() in ("yes", "true", "1"):
            return True
        if text.lower() in ("no", "false", "0"):
            return False
        raise BadInput(f"{flag} {text!r}: yes or no")
    return text


def _toml_file(flag: str, path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UnusableFile(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise UnusableFile(f"{flag} {path}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnusableFile(f"{flag} {path}: not TOML ({exc})") from None


def _text_file(flag: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnusableFile(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise UnusableFile(f"{flag} {path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UnusableFile(f"{flag} {path}: not UTF-8 text") from None


def _open_request(args: argparse.Namespace) -> dict[str, Any]:
    """The open request: the file's fields (``--from``), then the flags over them."""
    a: dict[str, Any] = {}
    if args.from_file:
        data = _toml_file("--from", args.from_file)
        if "procedure" in data:
            data["details"] = data.pop("procedure")
        a.update(data)
    for f in OPEN_FIELDS:
        v = getattr(args, f.name)
        if v is not None:
            a[f.name] = v
    if args.study is not None:
        a["study"] = args.study
    if isinstance(a.get("study"), str) and ("/" in a["study"] or a["study"].endswith(".toml")):
        a["study_toml"] = _text_file("--study", a["study"])  # the daemon reads no user file
    if args.consent or args.consent_form:
        consent = dict(a.get("consent") or {})
        if args.consent:
            consent["confirmed"] = True
        if args.consent_form:
            consent["form_version"] = args.consent_form
        consent.setdefault("confirmed", False)
        a["consent"] = consent
    for flag, (section, name, kind) in STUDY_FLAGS.items():
        text = getattr(args, _dest(flag))
        if text is not None:
            a.setdefault(section, {})[name] = _value(flag, kind, text)
    if args.eligible or args.not_eligible:
        sel = a.setdefault("selection", {})
        elig = dict(sel.get("eligibility") or {})
        items = dict(elig.get("items") or {})
        if "all" in args.eligible:
            items["*"] = True
        items.update({i: True for i in args.eligible if i != "all"})
        items.update(dict.fromkeys(args.not_eligible, False))
        elig["items"] = items
        sel["eligibility"] = elig
    if "study" not in a:
        missing = [f.flag for f in OPEN_FIELDS if f.required and f.name not in a]
        missing = [m for m in missing if m != "--operator"]
        if missing:
            raise BadInput(f"procedure open needs {', '.join(missing)} (or --study/--from)")
    return a


def _ae_request(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if args.from_file:
        data.update(_toml_file("--from", args.from_file))
    for flag, (name, kind) in AE_FLAGS.items():
        text = getattr(args, _dest(flag))
        if text is not None:
            data[name] = _value(flag, kind, text)
    return data


# ---- cryoctl record resend (the record channel, docs/record-channel.md) ----------------------
def _seq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a chain sequence number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("a chain sequence number is 1 or more")
    return value


def _record_parser(sub: Any) -> None:
    rp = sub.add_parser("record", help="the record channel to the study collector")
    rsub = rp.add_subparsers(dest="rcmd", required=True)
    rr = rsub.add_parser(
        "resend",
        help="publish chain entries again (a gap the collector reported)",
        description="Publish the chain entries FROM..TO (TO: the chain's end) again on the "
        "record channel, from the store, at the channel's rate. Recorded in the chain "
        "with who asked. The collector ignores what it already holds.",
    )
    rr.add_argument("--from", dest="first", type=_seq, required=True, metavar="SEQ")
    rr.add_argument("--to", dest="last", type=_seq, default=None, metavar="SEQ")


def _record_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.last is not None and args.last < args.first:
        raise BadInput(f"--to {args.last} is before --from {args.first}")
    return "record_resend", {"first": args.first, "last": args.last}


# ---- end of cryoctl record -------------------------------------------------------------------


VERIFY_EPILOG = """\
checks, reported apart:
  chain    the chain is consistent on its own (no entry edited, deleted, reordered)
  tables   every research row and sample batch matches the chain's latest entry
  anchors  the chain agrees with each record of its head outside the database
           (--log: journal export or daemon log; --anchors: anchor file or heads
           collected from MQTT; --head SEQ:HASH). Without anchors, a chain
           recomputed after an edit passes the two checks above.
  export   with --export FILE: every row of an export re-hashes to its digest

exit status (with several failures, the first in this order):
  0  every check passed
  1  the chain is not consistent on its own
  4  a table (research row or sample batch) does not match the chain
  5  the chain disagrees with an anchor (rewritten, cut off, forked)
  6  the export does not match what it carries
  2  bad command line: a malformed --head
  3  the daemon could not be reached (without --db)
  7  a file cannot be used: --db missing, not SQLite, corrupt, not a cryod database
     or at another schema revision; --log, --anchors or --export missing or
     unreadable; --export not JSON or not a cryod.export/2 file
"""


def _verify_parser(sub: Any) -> None:
    sp = sub.add_parser(
        "verify",
        help="verify the record: chain, tables, anchors (and an export)",
        description="Verify the record against its chain, and the chain against its anchors "
        "(docs/integrity.md).",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("--db", default=None, help="work offline on a database file")
    sp.add_argument(
        "--head", action="append", default=[], metavar="SEQ:HASH", help="an expected chain head"
    )
    sp.add_argument(
        "--log", action="append", default=[], metavar="FILE", help="heads the daemon logged"
    )
    sp.add_argument(
        "--anchors",
        action="append",
        default=[],
        metavar="FILE",
        help="an anchor file, or heads collected from MQTT (one message per line)",
    )
    sp.add_argument("--export", default=None, metavar="FILE", help="verify an export file")
    sp.add_argument("--json", action="store_true", help="the report as JSON")


def _heads_arg(values: list[str]) -> list[Any]:
    from cryod.integrity import AnchorHead

    out = []
    for n, text in enumerate(values, 1):
        seq, sep, digest = text.partition(":")
        if not (sep and seq.isdigit() and int(seq) >= 1 and _is_hash(digest)):
            raise BadInput(
                f"--head {text!r}: expected SEQ:HASH (an entry number, a colon, "
                "its 64-hex-digit hash)"
            )
        out.append(AnchorHead(int(seq), digest.lower(), None, n))
    return out


def _is_hash(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _anchor_sources(args: argparse.Namespace) -> list[Any]:
    from .store.record_check import AnchorSource, anchor_source

    sources = []
    if args.head:
        sources.append(AnchorSource("--head", tuple(_heads_arg(args.head))))
    for flag, paths in (("--log", args.log), ("--anchors", args.anchors)):
        for path in paths:
            try:
                sources.append(anchor_source(path))
            except FileNotFoundError:
                raise UnusableFile(f"{flag} {path}: no such file") from None
            except OSError as exc:
                raise UnusableFile(f"{flag} {path}: cannot be read ({exc.strerror})") from None
    return sources


def _verify_offline(args: argparse.Namespace) -> int:
    from .store.record_check import VerifyExit, check_record

    sources = _anchor_sources(args)
    out: dict[str, Any] = {}
    lines: list[str] = []
    code = VerifyExit.OK
    if args.db:
        report = _read_db(args.db, lambda db: check_record(db, sources))
        out["record"] = report.as_dict()
        lines += report.lines()
        code = report.exit_code
    if args.export:
        ex = _verify_export_file(args.export, sources, args.db)
        out["export"] = ex.as_dict()
        lines += ex.lines()
        if not ex.ok and code is VerifyExit.OK:
            code = VerifyExit.EXPORT
    out["exit_code"] = int(code)
    if args.json:
        _print_json(out)
    else:
        print("\n".join(lines))
    return int(code)


def _read_db(db: str, fn: Callable[[Engine], T]) -> T:
    """``fn(engine)`` on the cryod database file ``db``, read-only, through
    ``open_for_reading``: a file that cannot be used (``check_database``, or an
    SQLite error met reading it) is an ``UnusableDatabase``, one line, exit 7."""
    from .store.db import open_for_reading

    with open_for_reading(db) as engine:
        return fn(engine)


def _verify_export_file(path: str, sources: list[Any], db: str | None) -> Any:
    from .store.export import ExportVersionError, verify_export

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnusableFile(f"--export {path}: no such file") from None
    except OSError as exc:
        raise UnusableFile(f"--export {path}: cannot be read ({exc.strerror})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnusableFile(f"--export {path}: not JSON ({exc})") from None
    try:
        if db is None:
            return verify_export(doc, path=path, anchors=sources)
        return _read_db(db, lambda d: verify_export(doc, path=path, anchors=sources, db=d))
    except ExportVersionError as exc:
        raise UnusableFile(f"--export {path}: {exc}") from None


def _redact(args: argparse.Namespace) -> int:
    from .store.chain import ChainedSession
    from .store.db import DATABASE_ERRORS, check_at_head, make_engine, unreadable
    from .store.redaction import RedactionError, redact_procedure, redact_row

    row: tuple[str, int] | None = None
    if args.procedure is None:
        table, _, rid = str(args.row).partition(":")
        if not (table and rid.isdigit()):
            raise BadInput(f"--row {args.row!r}: expected TABLE:ID, e.g. alarms:12")
        row = (table, int(rid))
    check_at_head(args.db)  # UnusableDatabase: one line, exit 7
    engine = make_engine(args.db)
    result: object
    try:
        with ChainedSession(engine) as session, session.begin():
            if row is None:
                result = redact_procedure(session, args.procedure, by=args.by, reason=args.reason)
            else:
                result = redact_row(session, row[0], {"id": row[1]}, by=args.by, reason=args.reason)
    except RedactionError as exc:
        print(f"cryoctl: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except DATABASE_ERRORS as exc:
        raise unreadable(args.db, exc, doing="written") from exc
    finally:
        engine.dispose()
    print(f"redacted: {result}")
    return EXIT_OK


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
            return "procedure_open", {**a, **_open_request(args)}
        if args.notes is not None:
            a["notes"] = args.notes
        a["adverse_events"] = _adverse(args.adverse_event)
        return "procedure_close", a
    if c == "baseline-pain":
        a["score"] = _value("score", "float", str(args.score))
        if args.assessed_at is not None:
            a["assessed_at"] = args.assessed_at
        return "baseline_pain", a
    if c == "ae":
        if args.acmd == "add":
            return "ae_add", {**a, "event": _ae_request(args)}
        if args.acmd == "update":
            changes = _ae_request(args)
            if not changes:
                raise BadInput("ae update: give at least one field to change")
            return "ae_update", {**a, "ae_id": args.ae_id, "changes": changes}
        if args.procedure is not None:
            a["procedure_id"] = args.procedure
        return "ae_list", a
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
    if c == "record":
        return _record_request(args)
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
            f"{_link_text(link)} (timeouts {link['timeouts']}, "
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
            sup = "---" if snap["supply_kpa"] is None else f"{snap['supply_kpa']} kPa"
            print(
                f"  supply {sup} ({snap['supply_validity']}), master "
                f"{'open' if snap['master_open'] else 'closed'}, lease "
                f"{'armed' if snap['lease']['armed'] else 'DISARMED'} "
                f"{snap['lease']['timeout_ms']} ms, faults {snap['faults'] or 'none'}"
            )
            for p in snap["probes"]:
                tip = "---" if p["tip_c"] is None else f"{p['tip_c']:.1f} C"
                print(
                    f"  probe {p['probe']}: {tip} ({p['tip_validity']})"
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


def _link_text(link: dict[str, Any]) -> str:
    """``up``; ``silent for N s`` (no snapshot for longer than the stale rule, though
    connected); ``DOWN``."""
    age = link.get("snapshot_age_s")
    silent = "silent (no snapshot yet)" if age is None else f"silent for {age:.1f} s"
    state = link.get("state", "up" if link["connected"] else "down")
    if state == "up":
        return "up"
    return silent if state == "silent" else f"DOWN, {silent}"


def _offline(args: argparse.Namespace) -> int:
    from .store import export, queries
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
            if args.format in ("fhir", "redcap"):
                from .store import study_export

                if args.format == "fhir":
                    return _write_export(args, study_export.fhir_export(db, args.id))
                return _write_export(args, study_export.redcap_export(db, args.id))
            return _write_export(
                args,
                export.export_csv(db, args.id)
                if args.format == "csv"
                else export.export_json(db, args.id),
            )
        if args.cmd == "ae":
            if args.procedure is None:
                raise BadInput("ae list --db needs --procedure ID")
            _print_json(queries.list_adverse_events(db, args.procedure))
            return EXIT_OK
        if args.cmd == "report":
            from .report import write_report

            out = write_report(args.db, args.id, args.out)
            print(out)
            return EXIT_OK
    return EXIT_USAGE


def _write_export(args: argparse.Namespace, data: Any) -> int:
    if getattr(args, "format", None) == "redcap":
        return _write_redcap(args.out, data)
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


def _write_redcap(out: str | None, files: dict[str, str]) -> int:
    """The REDCap project's CSV files into the directory ``out`` (created if missing)."""
    if not out:
        raise BadInput("export --format redcap needs --out DIR (the project's CSV files)")
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        print(f"cryoctl: {out}: cannot write the REDCap files ({exc.strerror})", file=sys.stderr)
        return EXIT_BAD_FILE
    for name in files:
        print(folder / name)
    return EXIT_OK


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except BadInput as exc:
        print(f"cryoctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnusableFile as exc:
        print(f"cryoctl: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE


#: the commands that also work on a database file (--db), with no daemon
OFFLINE_CAPABLE = ("procedures", "show", "export", "report", "ae")


def _on_files(args: argparse.Namespace) -> int:
    """A command on files, cryod not needed: ``redact``, ``verify --db/--export`` and the
    offline-capable ones with ``--db``. A database file that cannot be used is one
    line and exit 7 (``UnusableDatabase``, from ``check_database``)."""
    from .store.errors import UnusableDatabase

    try:
        if args.cmd == "redact":
            return _redact(args)
        if args.cmd == "verify":
            return _verify_offline(args)
        try:
            return _offline(args)
        except (ValueError, LookupError) as exc:
            print(f"cryoctl: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    except UnusableDatabase as exc:
        raise UnusableFile(exc.message) from None


def _main(args: argparse.Namespace) -> int:
    if (
        args.cmd == "redact"
        or (args.cmd == "verify" and (args.db or args.export))
        or (args.cmd in OFFLINE_CAPABLE and getattr(args, "db", None))
    ):
        return _on_files(args)
    if args.cmd == "watch":
        from .watch import run_watch

        return run_watch(args.socket, refresh_hz=args.hz)
    if args.cmd == "report":
        print("cryoctl report needs --db PATH (the daemon's database or a copy)", file=sys.stderr)
        return EXIT_USAGE
    cmd, req = _live_request(args)
    if cmd == "verify":
        req = {
            "anchors": [
                {"name": src.name, "heads": [[h.seq, h.hash, h.node] for h in src.heads]}
                for src in _anchor_sources(args)
            ]
        }
    if cmd == "show":
        req["id"] = args.id
    if cmd == "export":
        if args.format == "redcap" and not args.out:
            raise BadInput("export --format redcap needs --out DIR (the project's CSV files)")
        req.update(id=args.id, format=args.format)
    try:
        result = asyncio.run(call(args.socket, cmd, req, timeout_s=args.timeout))
    except ControlError as exc:
        lines = exc.message.splitlines() or [""]
        print(f"cryoctl: refused: {exc.code}: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, TimeoutError) as exc:
        print(f"cryoctl: cannot reach cryod at {args.socket}: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    if cmd == "status" and not args.json:
        _print_status(result)
    elif cmd == "verify":
        if args.json:
            _print_json(result["report"])
        else:
            print("\n".join(result["lines"]))
        return int(result["exit_code"])
    elif cmd == "export":
        return _write_export(args, result)
    else:
        _print_json(result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
