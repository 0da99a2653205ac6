"""``cryohub followup …``, ``withdraw``, ``export`` and ``summary`` (docs/followup.md).

Registered by ``cli.build_parser`` (``add_parsers``) and dispatched through
``COMMANDS``; changes go through ``cli._change`` (who is acting, their
password, the change and its audit entry, the head anchored). Refused input
is printed one problem a line, naming the field, exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from cryod.research.vocab import (
    ActionTaken,
    AeCategory,
    AeOutcome,
    AeSubcategory,
    FurtherIntervention,
    Relatedness,
    SeriousnessCriterion,
    VisitMode,
    VisitStatus,
)

__all__ = ["COMMANDS", "add_parsers"]

EXIT_BAD_INPUT = 2  # as cli.EXIT_BAD_INPUT


def _codes(vocab: Any) -> list[str]:
    return [m.value for m in vocab]


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a procedure uuid") from None


def add_parsers(sub: Any, common: argparse.ArgumentParser, acting: argparse.ArgumentParser) -> None:
    fu = sub.add_parser("followup", help="follow-up after the procedure day").add_subparsers(
        dest="followup_cmd", required=True
    )
    study = argparse.ArgumentParser(add_help=False)
    study.add_argument("--study", help="study id (default: the only study configured)")

    due = fu.add_parser("due", parents=[common, study], help="what is due and overdue")
    due.add_argument("--on", type=_date, help="the date (default: today at the site)")
    due.add_argument("--site", help="one site only")
    due.add_argument("--json", action="store_true")

    target = argparse.ArgumentParser(add_help=False, parents=[study])
    target.add_argument("--subject", required=True, help="the study pseudonym")
    target.add_argument(
        "--procedure", type=_uuid, help="the procedure followed (needed after a repeat)"
    )

    rec = fu.add_parser("record", parents=[common, acting, target], help="record a time point")
    rec.add_argument("--time-point", required=True, help="a time point id of the profile")
    rec.add_argument("--date", required=True, help="the actual date (YYYY-MM-DD, site)")
    rec.add_argument("--status", default="done", choices=_codes(VisitStatus))
    rec.add_argument("--reason", help="why the visit was not done (status other than done)")
    rec.add_argument(
        "--correction", metavar="REASON", help="correct a recorded time point, saying why"
    )
    rec.add_argument("--mode", choices=_codes(VisitMode))
    rec.add_argument("--pain", help="pain score on the profile's scale (NRS 0-10, VAS mm)")
    rec.add_argument("--qol", help="the quality-of-life instrument's total")
    rec.add_argument("--function", help="the function instrument's score")
    rec.add_argument("--satisfaction", help="1 very dissatisfied ... 5 very satisfied")

    ae = fu.add_parser(
        "ae",
        parents=[common, acting, target],
        help="record an adverse event or further intervention found after close",
    )
    ae.add_argument("--category", required=True, choices=_codes(AeCategory))
    ae.add_argument("--subcategory", required=True, choices=_codes(AeSubcategory))
    ae.add_argument("--term", required=True, help="verbatim term")
    ae.add_argument("--onset", help="ISO 8601, partial allowed (2026-03, 2026-03-27)")
    ae.add_argument("--resolution", help="ISO 8601, partial allowed")
    ae.add_argument("--grade", help="CTCAE v5 grade 1-5")
    ae.add_argument("--serious", choices=["yes", "no"])
    ae.add_argument(
        "--criterion", action="append", default=[], choices=_codes(SeriousnessCriterion)
    )
    ae.add_argument("--rel-device", choices=_codes(Relatedness))
    ae.add_argument("--rel-procedure", choices=_codes(Relatedness))
    ae.add_argument("--outcome", choices=_codes(AeOutcome))
    ae.add_argument("--action", choices=_codes(ActionTaken))
    ae.add_argument("--intervention", choices=_codes(FurtherIntervention))
    ae.add_argument("--intervention-date", help="ISO 8601, partial allowed")
    ae.add_argument("--yellow-card", help="MHRA Yellow Card reference")

    ch = fu.add_parser("change", parents=[common, acting, study], help="change an event")
    ch.add_argument("event", type=int)
    ch.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        required=True,
        help="a field of the event (repeatable; VALUE empty clears it)",
    )
    ch.add_argument("--reason", help="why (required once the event is signed)")

    sg = fu.add_parser(
        "sign", parents=[common, acting], help="sign an event off (investigator, password)"
    )
    sg.add_argument("event", type=int)

    ls = fu.add_parser("events", parents=[common, study], help="list events after close")
    ls.add_argument("--json", action="store_true")

    wd = sub.add_parser(
        "withdraw", parents=[common, acting, study], help="consent withdrawn: redact a subject"
    )
    wd.add_argument("subject")
    wd.add_argument("--reason", required=True)

    ex = sub.add_parser(
        "export", parents=[common, acting, study], help="the whole study out, validated"
    )
    ex.add_argument("--format", required=True, choices=["json", "csv", "fhir", "redcap", "sdtm"])
    ex.add_argument("--site", help="one site only")
    ex.add_argument("--out", type=Path, default=Path("."), help="directory (default: .)")

    sm = sub.add_parser("summary", parents=[common, study], help="the study report's tables")
    sm.add_argument("--site", help="one site only")
    sm.add_argument("--on", type=_date, help="completeness as of this date (default: today)")
    sm.add_argument("--csv", type=Path, help="also write the tables as CSV")
    sm.add_argument("--plot", type=Path, help="also write the pain plot (PNG or SVG)")


# ---- helpers ---------------------------------------------------------------------------------
def _cli() -> ModuleType:
    from . import cli

    return cli


def _do_change(
    args: argparse.Namespace, apply: Callable[..., Any], done: Callable[[Any], str]
) -> int:
    from . import cli

    return cli._change(args, None, apply, done)


def _profile(ctx: Any, study: str | None) -> Any:
    """The study's profile (its newest version) from the loaded config (``_Open``)."""
    return _profile_of(ctx.loaded.profiles, study)


def _profile_for(args: argparse.Namespace, study: str | None) -> Any:
    from .config import load_config

    return _profile_of(load_config(args.config).profiles, study)


def _profile_of(profiles: Any, study: str | None) -> Any:
    from .admin import Refused
    from .followup import newest_profiles

    ids = sorted({p.study.id for p in profiles})
    if study is None:
        if len(ids) != 1:
            raise Refused(f"--study: name one ({', '.join(ids) or 'no study profiles configured'})")
        study = ids[0]
    newest = newest_profiles(profiles).get(study)
    if newest is None:
        raise Refused(f"--study: {study!r} is not a configured study ({', '.join(ids) or 'none'})")
    return newest


def _require_actor(args: argparse.Namespace) -> None:
    from .admin import NotPermitted

    if args.as_user is None:
        raise NotPermitted("who is acting? --as USER (then that user's password)")


def _refused(exc: Any) -> int:
    for p in exc.problems:
        print(f"cryohub: refused: {p}", file=sys.stderr)
    return EXIT_BAD_INPUT


class OutputError(Exception):
    """An output path that cannot be written: the text names the option, the path and why."""


def _writable_dir(option: str, path: Path) -> None:
    """``path`` is a directory we may write in, or one that can be made there."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: exists and is not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{option} {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: {ancestor} is not writable by this user")


def _writable_file(option: str, path: Path) -> None:
    """``path`` can be written: not a directory, in an existing directory we may write in."""
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a directory")
    if not path.parent.is_dir():
        raise OutputError(f"{option} {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (
        path.exists() and not os.access(path, os.W_OK)
    ):
        raise OutputError(f"{option} {path}: not writable by this user")


def _write_text(option: str, path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise OutputError(f"{option} {path}: {exc.strerror or exc}") from None


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from cryod.research.fhir_library import FhirLibraryMissing
        from cryod.research.problems import ResearchDataError

        from .exports import ExportInvalid

        try:
            return fn(args)
        except (ResearchDataError, ExportInvalid) as exc:
            return _refused(exc)
        except OutputError as exc:
            print(f"cryohub: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except FhirLibraryMissing as exc:
            print(
                f"cryohub: {exc} (install the extra: pip install 'cryod[research]')",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT

    return run


def _snapshot(ctx: Any, profile: Any, site: str | None) -> Any:
    from sqlalchemy.orm import Session

    from .followup_store import snapshot, study_data

    with Session(ctx.engine) as s:
        snap = snapshot(s, profile.study.id, site)
    return study_data(profile, snap, _cli()._now()), snap.withdrawn


# ---- followup ----------------------------------------------------------------------------------
def cmd_followup(args: argparse.Namespace) -> int:
    sub = args.followup_cmd
    if sub == "due":
        return _due(args)
    if sub == "events":
        return _events(args)
    _require_actor(args)
    if sub == "record":
        return _record(args)
    if sub == "ae":
        return _ae(args)
    if sub == "change":
        return _change_event(args)
    if sub == "sign":
        return _sign(args)
    return EXIT_BAD_INPUT


def _due(args: argparse.Namespace) -> int:
    from cryod.research.followup import local_date

    from .followup import due_list
    from .summary import final_statuses

    cli = _cli()
    with cli._Open(args.config) as ctx:
        studies = (
            [_profile(ctx, args.study)]
            if args.study or len({p.study.id for p in ctx.loaded.profiles}) == 1
            else [_profile(ctx, i) for i in sorted({p.study.id for p in ctx.loaded.profiles})]
        )
        items: list[dict[str, Any]] = []
        for profile in studies:
            data, _ = _snapshot(ctx, profile, args.site)
            on = args.on or local_date(cli._now(), profile.zone)
            recorded = {(u, a.time_point) for u, a in data.assessments}
            ended = {s: d for s, (d, _status) in final_statuses(data).items()}
            site_of = {p.procedure_uuid: p.site for p in data.procedures}
            for d in due_list(profile, data.procedures, recorded=recorded, ended=ended, on=on):
                w = d.window
                items.append(
                    {
                        "study": profile.study.id,
                        "site": site_of[w.procedure_uuid],
                        "subject": w.subject,
                        "procedure": str(w.procedure_uuid),
                        "time_point": w.time_point,
                        "label": w.label,
                        "target": w.target_on.isoformat(),
                        "window": [w.earliest_on.isoformat(), w.latest_on.isoformat()],
                        "state": d.state.value,
                        "on": on.isoformat(),
                    }
                )
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("nothing due or overdue")
    for i in items:
        print(
            f"{i['state']:<8} {i['study']} {i['site']:<10} {i['subject']:<12} "
            f"{i['time_point']:<6} target {i['target']} window {i['window'][0]}..{i['window'][1]} "
            f"procedure {i['procedure']}"
        )
    return 0


def _record(args: argparse.Namespace) -> int:
    from .followup_store import record_assessment

    cli = _cli()
    data = {
        "time_point": args.time_point,
        "assessed_on": args.date,
        "status": args.status,
        "reason": args.reason,
        "mode": args.mode,
        "pain_score": args.pain,
        "qol_total": args.qol,
        "function_score": args.function,
        "satisfaction": args.satisfaction,
    }
    data = {k: v for k, v in data.items() if v is not None}
    result: dict[str, Any] = {}

    def apply(session: Any, actor: Any, _pw: Any, node: str) -> Any:
        profile = _profile_for(args, args.study)
        head, row_id, in_window = record_assessment(
            session,
            actor,
            profile,
            subject=args.subject,
            procedure=args.procedure,
            data=data,
            reason=args.correction,
            now=cli._now(),
            node=node,
        )
        result.update(row=row_id, in_window=in_window)
        return head

    def done(head: Any) -> str:
        note = "" if result["in_window"] else " (outside its window: a protocol deviation)"
        return (
            f"{args.subject} {args.time_point} recorded as {args.status}{note} "
            f"(follow-up {result['row']}; entry {head.seq})"
        )

    return _do_change(args, apply, done)


def _ae(args: argparse.Namespace) -> int:
    from .followup_store import record_event

    cli = _cli()
    data: dict[str, Any] = {
        "category": args.category,
        "subcategory": args.subcategory,
        "verbatim_term": args.term,
        "onset": args.onset,
        "resolution": args.resolution,
        "ctcae_grade": args.grade,
        "serious": None if args.serious is None else args.serious == "yes",
        "seriousness_criteria": args.criterion,
        "relatedness_device": args.rel_device,
        "relatedness_procedure": args.rel_procedure,
        "outcome": args.outcome,
        "action_taken": args.action,
        "further_intervention": args.intervention,
        "further_intervention_date": args.intervention_date,
        "yellow_card_ref": args.yellow_card,
    }
    result: dict[str, int] = {}

    def apply(session: Any, actor: Any, _pw: Any, node: str) -> Any:
        profile = _profile_for(args, args.study)
        head, event_id = record_event(
            session,
            actor,
            profile,
            subject=args.subject,
            procedure=args.procedure,
            data=data,
            now=cli._now(),
            node=node,
        )
        result["event"] = event_id
        return head

    return _do_change(
        args,
        apply,
        lambda head: (
            f"event {result['event']} recorded ({args.category}/{args.subcategory}) for "
            f"{args.subject}; an investigator signs it: cryohub followup sign "
            f"{result['event']} --as USER (entry {head.seq})"
        ),
    )


def _set_value(name: str, value: str) -> Any:
    if value == "":
        return None
    if name == "seriousness_criteria":
        return [v for v in value.split(",") if v]
    if name == "serious":
        return value.lower() in ("yes", "true", "1")
    return value


def _change_event(args: argparse.Namespace) -> int:
    from .admin import Refused
    from .followup_store import change_event

    cli = _cli()
    changes: dict[str, Any] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Refused(f"--set: {item!r} is not FIELD=VALUE")
        changes[name.strip()] = _set_value(name.strip(), value)
    result: dict[str, int] = {}

    def apply(session: Any, actor: Any, _pw: Any, node: str) -> Any:
        from .store.models import FollowUpEventRow

        row = session.get(FollowUpEventRow, args.event)
        profile = _profile_for(args, args.study or (row.study if row is not None else None))
        head, version = change_event(
            session,
            actor,
            profile,
            event_id=args.event,
            changes=changes,
            reason=args.reason,
            now=cli._now(),
            node=node,
        )
        result["version"] = version
        return head

    return _do_change(
        args,
        apply,
        lambda head: (
            f"event {args.event} changed to version {result['version']} "
            f"({', '.join(sorted(changes))}; entry {head.seq})"
        ),
    )


def _sign(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from .followup import signature_meaning
    from .followup_store import event_for_signing, sign_event

    cli = _cli()
    with cli._Open(args.config) as ctx, Session(ctx.engine) as s:
        content, version = event_for_signing(s, args.event)
    print(f"Event {args.event}, version {version}:")
    for k in sorted(content):
        print(f"  {k}: {content[k]}")
    print("Meaning of this signature:")
    print(f"  {signature_meaning(args.as_user, args.event, version)}")
    print("Enter your password to sign.", flush=True)
    result: dict[str, Any] = {}

    def apply(session: Any, actor: Any, _pw: Any, node: str) -> Any:
        signed = sign_event(session, actor, event_id=args.event, now=cli._now(), node=node)
        result["signed"] = signed
        return signed.head

    return _do_change(
        args,
        apply,
        lambda head: (
            f"event {args.event} version {result['signed'].version} signed by {args.as_user} "
            f"(entry {head.seq})"
        ),
    )


def _events(args: argparse.Namespace) -> int:
    cli = _cli()
    with cli._Open(args.config) as ctx:
        profile = _profile(ctx, args.study)
        data, _ = _snapshot(ctx, profile, None)
    subject_of = {p.procedure_uuid: p.subject for p in data.procedures}
    items = [
        {
            "event": e.event_id,
            "subject": subject_of.get(e.procedure_uuid),
            "procedure": str(e.procedure_uuid),
            "category": e.event.category.value,
            "subcategory": e.event.subcategory.value,
            "onset": e.event.onset,
            "grade": e.event.ctcae_grade,
            "signed": e.signed,
        }
        for e in data.events
    ]
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        if not items:
            print("no events recorded after close")
        for i in items:
            state = "signed" if i["signed"] else "NOT SIGNED"
            print(
                f"{i['event']:>4} {i['subject']:<12} {i['category']}/{i['subcategory']} "
                f"onset {i['onset']} grade {i['grade']} {state}"
            )
    return 0


# ---- withdraw, export, summary -----------------------------------------------------------
def cmd_withdraw(args: argparse.Namespace) -> int:
    from .followup_store import withdraw

    _require_actor(args)
    cli = _cli()
    result: dict[str, Any] = {}

    def apply(session: Any, actor: Any, _pw: Any, node: str) -> Any:
        profile = _profile_for(args, args.study)
        report = withdraw(
            session,
            actor,
            profile,
            subject=args.subject,
            reason=args.reason,
            now=cli._now(),
            node=node,
        )
        result["report"] = report
        return report.head

    def done(head: Any) -> str:
        r = result["report"]
        lines = [
            f"{args.subject} withdrawn (entry {head.seq}): follow-up stopped; redacted "
            + ", ".join(f"{n} {t}" for t, n in r.redacted.items())
            + "; left out of every export from now on.",
            "Copies remain, for someone to deal with:",
        ]
        lines += [
            f"  room {node}: its own database (cryoctl redact at the room; the redaction then "
            "reaches the collector on the record channel)"
            for node in r.rooms
        ]
        lines += [
            f"  export (entry {e['entry']}, {e['at']}): {e['format']} in {e['path']}"
            for e in r.exports
        ]
        lines.append("  backups of the collector's database and of each room's")
        return "\n".join(lines)

    return _do_change(args, apply, done)


def cmd_export(args: argparse.Namespace) -> int:
    from .exports import export_files
    from .followup import may_read
    from .followup_store import record_export

    _require_actor(args)
    _writable_dir("--out", args.out)  # before the password prompt and the work
    cli = _cli()
    result: dict[str, Any] = {}

    def apply(session: Any, actor: Any, _pw: Any, node: str) -> Any:
        from .admin import NotPermitted
        from .followup_store import snapshot, study_data

        profile = _profile_for(args, args.study)
        study = profile.study.id
        if not may_read(actor.grants, study, args.site):
            raise NotPermitted(f"{actor.name} may not export study {study}")
        snap = snapshot(session, study, args.site)
        data = study_data(profile, snap, cli._now())
        files = export_files(data, args.format)
        out: Path = args.out
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"--out {out}: {exc.strerror or exc}") from None
        written = {}
        for name, text in files.items():
            _write_text("--out", out / name, text)
            written[name] = _sha256(text)
        result["files"] = [str(out / n) for n in files]
        result["subjects"] = len({p.subject for p in data.procedures})
        return record_export(
            session,
            actor,
            study=study,
            site=args.site,
            fmt=args.format,
            path=str(out.resolve()),
            subjects=[p.subject for p in data.procedures],
            files=written,
            now=cli._now(),
            node=node,
        )

    return _do_change(
        args,
        apply,
        lambda head: (
            f"{args.format} export of {result['subjects']} subject(s) validated and written "
            f"(entry {head.seq}):\n" + "\n".join(f"  {f}" for f in result["files"])
        ),
    )


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cmd_summary(args: argparse.Namespace) -> int:
    from cryod.research.followup import local_date

    from .summary import summarise

    if args.csv is not None:
        _writable_file("--csv", args.csv)
    if args.plot is not None:
        _writable_file("--plot", args.plot)
    cli = _cli()
    with cli._Open(args.config) as ctx:
        profile = _profile(ctx, args.study)
        data, withdrawn = _snapshot(ctx, profile, args.site)
    on = args.on or local_date(cli._now(), profile.zone)
    summary = summarise(data, on, withdrawn=withdrawn)
    print(summary.text(), end="")
    if args.csv is not None:
        _write_text("--csv", args.csv, summary.csv())
        print(f"tables: {args.csv}")
    if args.plot is not None:
        from .summary_plot import write_plot

        try:
            write_plot(summary, args.plot)
        except OSError as exc:
            raise OutputError(f"--plot {args.plot}: {exc.strerror or exc}") from None
        except ModuleNotFoundError as exc:  # pragma: no cover - tests install the report extra
            if not (exc.name or "").startswith("matplotlib"):
                raise
            print("cryohub: --plot needs matplotlib: pip install 'cryod[report]'", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"plot: {args.plot}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "followup": _guard(cmd_followup),
    "withdraw": _guard(cmd_withdraw),
    "export": _guard(cmd_export),
    "summary": _guard(cmd_summary),
}
