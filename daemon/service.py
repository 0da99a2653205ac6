"""``cryod run``: the daemon process, every subsystem under one task group.

Start-up order: logging, config, database (migrate with a backup, then mark
open cycles interrupted), the batched writer, the control socket, the
consoles (each starts in the safe state), MQTT if configured, then READY to
systemd. Shutdown order on SIGTERM/SIGINT: every console to the safe state,
then the log is flushed, then MQTT says offline, then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pwd
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cryod import __version__
from cryod.drivers.registry import load_driver
from cryod.research.problems import ResearchDataError
from cryod.research.profile import (
    StudyProfileError,
    builtin_study_names,
    load_study_profile,
    parse_study_profile,
)

from . import commands as C
from . import control_commands as cc
from .anchoring import AnchorFile, Anchoring, StartCheck, start_check
from .config import LoadedConfig, driver_options
from .console_service import ConsoleService
from .control import ControlError, ControlServer, Peer
from .logging import get_logger
from .procedure_fields import OPEN_FIELDS
from .protocol_files import load_protocol
from .protocols import ProtocolError
from .sdnotify import Heartbeats, Notifier, Watchdog
from .store import audit, chain, export, queries, retention
from .store.convert import refuse_unconverted
from .store.db import make_engine
from .store.errors import StoreError
from .store.migrate_proc import migrate_in_child
from .store.outbox import Outbox
from .store.records import ProcedureLog, RecordError, prepare_study, study_defaults
from .store.recovery import recover
from .store.schema_version import HEAD_REVISION, at_head
from .store.writer import Writer
from .telemetry.console_feed import ConsoleTelemetry

__all__ = ["Daemon"]

log = get_logger("cryod")

OPEN_FIELD_NAMES = tuple(f.name for f in OPEN_FIELDS)


class Daemon:
    def __init__(self, loaded: LoadedConfig, *, notifier: Notifier | None = None) -> None:
        self.loaded = loaded
        self.cfg = loaded.cfg
        self.notifier = notifier or Notifier(unset_environment=True)
        self.consoles: dict[str, ConsoleService] = {}
        self.feeds: dict[str, ConsoleTelemetry] = {}  # MQTT, per console (when configured)
        self.writer: Writer | None = None
        self.plog: ProcedureLog | None = None
        self.control: ControlServer | None = None
        self.publishers: list[Any] = []
        self.session = 0
        self.started_mono = time.monotonic()
        self.heartbeats = Heartbeats()
        self.storage_error: str | None = None
        self.anchoring: Anchoring | None = None
        self.anchor_condition: str | None = None  # anchor_failed while present
        self.record: Any = None  # the record channel (record_channel.channel), when enabled
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        d = self.cfg.daemon
        node = self.cfg.node.id
        db = Path(d.database)
        db.parent.mkdir(parents=True, exist_ok=True)
        anchors = self.cfg.anchors
        # the database against its anchor file, before anything writes to it
        found = None
        if anchors.file is not None:
            try:
                found = await asyncio.to_thread(_start_check, AnchorFile(anchors.file), node, db)
            except OSError as exc:  # unreadable now: the route will alarm if it stays so
                log.warning("anchor_file_unreadable", path=str(anchors.file), error=str(exc))
        if await asyncio.to_thread(at_head, db):
            log.info("database_ready", path=str(db), revision=HEAD_REVISION, backup=None)
        else:
            self.notifier.status("migrating database")
            self.notifier.extend_timeout(60)
            report = await migrate_in_child(db, node)  # Alembic never loaded in the daemon
            log.info(
                "database_ready",
                path=str(db),
                revision=report.to_revision,
                backup=None if report.backup_path is None else str(report.backup_path),
            )
        # samples of the old form left (an upgrade, or a cryod migrate that stopped)
        await asyncio.to_thread(refuse_unconverted, db)
        engine = make_engine(db)
        chain_node = await asyncio.to_thread(_chain_node, engine)
        if chain_node is not None and chain_node != node:
            log.error(
                "node_mismatch",
                path=str(db),
                chain_node=chain_node,
                config_node=node,
                hint=f'the database belongs to node {chain_node!r}: set [node] id = "{chain_node}"',
            )
            engine.dispose()
            return 2  # cli.EXIT_CONFIG: the config names another node (docs/cli.md)
        if found is not None and found.state not in ("none", "consistent"):
            await asyncio.to_thread(_record_start_check, engine, found, anchors.file)
            if found.state == "mismatch":
                self.anchor_condition = f"the database disagrees with its anchors: {found.detail}"
        self.anchoring = Anchoring(
            node=node,
            interval_s=anchors.interval_s,
            alarm_after_s=anchors.alarm_after_s,
            anchor_file=anchors.file,
            on_condition=self._anchor_condition,
        )
        rec = await asyncio.to_thread(recover, engine)
        if rec.interrupted:
            log.warning(
                "cycles_interrupted",
                count=len(rec.interrupted),
                cycles=[c.cycle_id for c in rec.interrupted],
            )
        open_procs = await asyncio.to_thread(queries.open_procedures, engine)
        self.record = self._record_channel(engine)
        self.writer = Writer(
            engine,
            batch_max=d.sample_batch_max,
            batch_interval_s=d.sample_batch_interval_s,
            on_error=self._on_storage_error,
            on_head=self._on_head,
            on_foreign_head=self._foreign_head,
        )
        await self.writer.start()
        self.plog = ProcedureLog(self.writer, study_id_required=d.require_study_id)
        self.session = await self.writer.commit_now(queries.next_session, label="session")
        await self.plog.record_event(
            "daemon_started", {"version": __version__, "session": self.session}
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            async with asyncio.TaskGroup() as tg:
                for ccfg in self.cfg.consoles:
                    drv_cls = load_driver(ccfg.driver)
                    drv = drv_cls.from_options(
                        driver_options(ccfg, self.loaded.path),
                        source=f"{self.loaded.path}: consoles.{ccfg.id}",
                    )
                    feed = None
                    if self.loaded.mqtt is not None and self.loaded.mqtt.enabled:
                        feed = self.feeds[ccfg.id] = self._publisher(ccfg.id)
                    svc = ConsoleService(
                        ccfg,
                        drv,
                        self.loaded.envelopes[ccfg.id],
                        writer=self.writer,
                        plog=self.plog,
                        telemetry=feed,
                        adopt=open_procs.get(ccfg.id),  # left open by a previous run
                    )
                    if self.anchor_condition is not None:
                        svc.anchoring_failed(True, self.anchor_condition)
                    self.consoles[ccfg.id] = svc
                    tg.create_task(svc.run(), name=f"console-{ccfg.id}")
                    self.heartbeats.register(f"poll-{ccfg.id}", max(2.0, 10 * ccfg.poll_period_s))
                self.heartbeats.register("writer", 10.0)
                if self.publishers and anchors.mqtt and self.loaded.mqtt is not None:
                    from .telemetry.payloads import audit_head_topic

                    topic = audit_head_topic(self.loaded.mqtt.site, node)
                    self.anchoring.attach_mqtt(self.publishers[0], topic)
                tg.create_task(self.anchoring.run(), name="anchoring")
                self.control = ControlServer(
                    d.control_socket,
                    self._handlers(),
                    mode=d.control_socket_mode,
                    group=d.control_group,
                    on_refused=self._refused,
                )
                await self.control.start()
                tg.create_task(self._health(), name="health")
                tg.create_task(self._retention(), name="retention")
                wd = Watchdog(self.notifier, self.heartbeats.healthy)
                if wd.enabled:
                    tg.create_task(wd.run(), name="watchdog")
                self.notifier.ready(f"serving {len(self.consoles)} console(s)")
                log.info(
                    "ready",
                    consoles=list(self.consoles),
                    socket=str(d.control_socket),
                    session=self.session,
                    version=__version__,
                )
                await self._stop.wait()
                self.notifier.stopping("stopping: safe state first")
                log.info("stopping")
                raise _Shutdown
        except* _Shutdown:
            pass
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._close()
        return 0

    async def _close(self) -> None:
        # console tasks were cancelled by the task group: each put its console in
        # the safe state in its own finally block. Now the log, then MQTT.
        if self.control is not None:
            await self.control.close()
        if self.record is not None:
            with contextlib.suppress(Exception):
                await self.record.close()  # the cursor as far as the broker acknowledged
        if self.plog is not None:
            with contextlib.suppress(StoreError):
                await self.plog.record_event("daemon_stopped", {"session": self.session})
        if self.writer is not None:
            await self.writer.aclose()
        if self.anchoring is not None:
            with contextlib.suppress(Exception):
                await self.anchoring.flush()  # the last head (daemon_stopped) leaves too
        for pub in self.publishers:
            with contextlib.suppress(Exception):
                await pub.close()
        log.info("stopped")

    def _publisher(self, console_id: str) -> ConsoleTelemetry:
        from .telemetry.publisher import Publisher

        assert self.writer is not None
        cfg = self.loaded.mqtt.for_console(console_id)
        pub = Publisher(
            cfg,
            session=self.session,
            software_version=__version__,
            outbox=Outbox(self.writer, console_id),
        )
        pub.start()
        self.publishers.append(pub)
        return ConsoleTelemetry(pub, cfg.telemetry_hz)

    # ---- the record channel (docs/record-channel.md) ----
    def _record_channel(self, engine: Any) -> Any:
        if self.loaded.record_mqtt is None:
            return None
        from .record_channel.channel import RecordChannel
        from .record_channel.cursor import Limits
        from .store.records import REDACTED, check_patient_ref

        rec = self.cfg.record
        mqtt = self.loaded.record_mqtt
        assert self.loaded.record_cursor is not None  # set with record_mqtt
        channel = RecordChannel(
            mqtt,
            client_id=mqtt.client_id,
            site=mqtt.site,
            node=self.cfg.node.id,
            engine=engine,
            cursor_path=self.loaded.record_cursor,
            limits=Limits(rate_per_s=rec.rate_per_s, burst=rec.burst, window=rec.window),
            check_pseudonym=check_patient_ref,
            placeholder=REDACTED,
            publish_timeout_s=rec.publish_timeout_s,
        )
        channel.start()
        return channel

    def _on_head(self, head: audit.AuditHead, label: str) -> None:
        """A new chain head after a COMMIT: to the anchors and the record channel."""
        if self.anchoring is not None:
            self.anchoring.offer(head, label)
        if self.record is not None:
            self.record.offer_head(head)

    async def _record_resend(self, args: dict[str, Any], peer: Peer) -> Any:
        """``cryoctl record resend``: recorded in the chain (who, the range, and whether
        it was refused) before the channel acts on it."""
        who = _who(peer)
        try:
            request = cc.RecordResend.model_validate(args)
        except ValidationError as exc:
            raise ControlError("bad_request", cc.refusal_message(exc)) from exc
        first, last = request.first, request.last
        refused = "the record channel is not enabled ([record] enabled)"
        if self.record is not None:
            refused = self.record.check_resend(first, last)
        if self.plog is None:
            raise ControlError("unavailable", "the log is not open")
        await self.plog.record_event(
            "record_resend",
            {"by": who, "first": first, "last": last, "accepted": refused is None,
             "reason": refused},
        )  # fmt: skip
        if refused is not None:
            raise ControlError("rejected", refused)
        return await self.record.resend(first, last)

    def _anchor_condition(self, present: bool, detail: str) -> None:
        """An anchor route failing (or well again): the medium anchor_failed alarm."""
        self.anchor_condition = detail if present else None
        for svc in self.consoles.values():
            svc.anchoring_failed(present, detail)

    def _foreign_head(
        self, expected: audit.AuditHead | None, found: audit.AuditHead | None
    ) -> None:
        """Entries appeared in the chain that this daemon did not write: recorded (verify
        reports them) and logged; the chain goes on from what it found."""
        log.error(
            "chain_foreign_entries",
            expected_seq=None if expected is None else expected.seq,
            found_seq=None if found is None else found.seq,
        )
        if self.plog is None:
            return
        payload = {
            "expected": None if expected is None else {"seq": expected.seq, "hash": expected.hash},
            "found": None if found is None else {"seq": found.seq, "hash": found.hash},
        }
        plog = self.plog

        async def record() -> None:
            with contextlib.suppress(Exception):  # logged above; never a crash
                await plog.record_event("chain_foreign", payload)

        task = asyncio.get_running_loop().create_task(record(), name="record-foreign")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_storage_error(self, err: StoreError) -> None:
        """Logged and shown in status; each console's supervisor raises the
        ``storage_failure`` alarm from the writer's health at its next poll."""
        self.storage_error = str(err)
        log.error("storage_error", error=str(err))

    async def _retention(self) -> None:
        """Samples outside procedures older than ``sample_retention_h`` go, a few
        batches every few seconds, through the writer (store/retention.py)."""
        assert self.writer is not None
        keep_h = self.cfg.daemon.sample_retention_h
        try:
            cursor = await self.writer.commit_now(retention.saved_cursor, label="retention")
        except StoreError:
            cursor = 0  # the writer reports the failure; start from the beginning
        while True:
            await asyncio.sleep(retention.INTERVAL_S)
            step_op = functools.partial(
                retention.retention_step, now_utc=time.time(), keep_h=keep_h, cursor=cursor
            )
            try:
                step = await self.writer.commit_now(step_op, label="retention")
            except StoreError:
                continue  # the writer turned unhealthy and says why
            cursor = step.cursor
            if step.polls:
                log.info("samples_retention", polls=step.polls, ranges=list(step.ranges))

    async def _health(self) -> None:
        """Feed the heartbeats that the watchdog checks; update telemetry state; tell
        systemd what each console is doing (STATUS=, shown by systemctl status)."""
        last_status = ""
        while True:
            text = "; ".join(
                f"{cid}: {svc.state.phase}{'' if svc.connected else ' (link down)'}"
                for cid, svc in self.consoles.items()
            )
            if self.storage_error:
                text += f"; storage: {self.storage_error}"
            if text != last_status:
                self.notifier.status(text)
                last_status = text
            for cid, svc in self.consoles.items():
                if svc.last_poll_mono is not None and time.monotonic() - svc.last_poll_mono < 2.0:
                    self.heartbeats.beat(f"poll-{cid}")
                feed = self.feeds.get(cid)
                if feed is not None:
                    feed.update(
                        engine=svc.engine_status(),
                        procedure_id=svc.procedure_id,
                        alarms=svc.active_alarms(),
                    )
            if self.writer is not None and self.writer.status().healthy:
                self.heartbeats.beat("writer")
            await asyncio.sleep(0.25)

    # ------------------------------------------------------------ control API
    def _console(self, args: cc.Command) -> ConsoleService:
        cid = args.console
        if cid is None:
            if len(self.consoles) != 1:
                raise ControlError("bad_request", f"name a console: {sorted(self.consoles)}")
            return next(iter(self.consoles.values()))
        if not isinstance(cid, str) or cid not in self.consoles:
            raise ControlError("unknown_console", f"{cid!r}; known: {sorted(self.consoles)}")
        return self.consoles[cid]

    def _handlers(self) -> dict[str, Any]:
        """Each command: its arguments validated by its model (``control_commands``),
        then its handler; every operator command is recorded, accepted or refused."""
        db = self.cfg.daemon.database

        def parsed(name: str, args: dict[str, Any]) -> Any:
            try:
                return cc.COMMANDS[name].model_validate(args)
            except ValidationError as exc:
                raise ControlError("bad_request", cc.refusal_message(exc)) from exc

        def op(name: str, fn: Any) -> Any:
            async def handler(args: dict[str, Any], peer: Peer) -> Any:
                who = _who(peer)
                svc = self._console(cc.Command.model_construct(console=args.get("console")))
                try:
                    result = await fn(svc, parsed(name, args), who)
                except ControlError as exc:
                    await self._action(svc, who, name, args, False, f"{exc.code}: {exc.message}")
                    raise
                except (ValidationError, ResearchDataError, StudyProfileError) as exc:
                    why = (
                        cc.refusal_message(exc)  # never echoes the input (patient refs)
                        if isinstance(exc, ValidationError)
                        else str(exc)
                    )
                    await self._action(svc, who, name, args, False, f"rejected: {why}")
                    raise ControlError("rejected", why) from exc
                except (ProtocolError, RecordError, ValueError) as exc:
                    await self._action(svc, who, name, args, False, f"rejected: {exc}")
                    raise ControlError("rejected", str(exc)) from exc
                except TimeoutError as exc:
                    await self._action(svc, who, name, args, False, "timeout")
                    raise ControlError("timeout", "the console did not answer in time") from exc
                await self._action(svc, who, name, args, True, None)
                return result

            return handler

        def reader(name: str, fn: Any) -> Any:
            async def handler(args: dict[str, Any], peer: Peer) -> Any:
                return await fn(parsed(name, args))

            return handler

        async def h_open(svc: ConsoleService, a: cc.ProcedureOpen, who: str) -> Any:
            meta = a.model_dump(include=set(OPEN_FIELD_NAMES), exclude_none=True)
            meta.setdefault("operator", who)
            study = None
            if a.study_toml is not None:
                profile = parse_study_profile(a.study_toml, a.study or "study profile")
            elif a.study is not None:
                if a.study not in builtin_study_names():
                    raise ControlError(
                        "rejected",
                        f"study {a.study!r} is not a study profile shipped with cryod "
                        f"({', '.join(builtin_study_names())}); give a file with "
                        "cryoctl procedure open --study FILE.toml",
                    )
                profile = await asyncio.to_thread(load_study_profile, a.study)
            else:
                profile = None
            if profile is not None:
                gas = None if svc.identity is None else svc.identity.gas
                selection, details = study_defaults(
                    meta, a.selection or {}, a.details or {}, profile, gas=gas
                )
                study = prepare_study(
                    profile, consent=a.consent, selection=selection, details=details
                )
            elif a.consent or a.selection or a.details:
                raise ControlError(
                    "bad_request", "consent, selection and details need a study profile (study)"
                )
            return {"procedure_id": await svc.open_procedure(meta, study=study)}

        async def h_close(svc: ConsoleService, a: cc.ProcedureClose, who: str) -> Any:
            data = a.model_dump(exclude={"console"}, exclude_none=True)
            data.setdefault("closed_by", who)
            return {"procedure_id": await svc.close_procedure(data)}

        def open_procedure_of(svc: ConsoleService, doing: str) -> int:
            if svc.procedure_id is None:
                raise ControlError(
                    "no_procedure",
                    f"no procedure is open on console {svc.id}: {doing} after close is the "
                    "study collector's to record",
                )
            return svc.procedure_id

        async def baseline_first(svc: ConsoleService) -> None:
            """run and freeze wait for the baseline pain score where the study requires it."""
            if svc.procedure_id is None:
                return  # the engine refuses: no procedure
            problems = await asyncio.to_thread(queries.baseline_gate, db, svc.procedure_id)
            if problems:
                raise ControlError("baseline_pain_required", "; ".join(p.message for p in problems))

        async def h_pain(svc: ConsoleService, a: cc.BaselinePain, who: str) -> Any:
            pid = open_procedure_of(svc, "a pain score")
            data = a.model_dump(mode="json", exclude={"console"}, exclude_none=True)
            assert self.plog is not None
            return {"assessment_id": await self.plog.record_baseline_pain(pid, data, by=who)}

        async def h_ae_add(svc: ConsoleService, a: cc.AeAdd, who: str) -> Any:
            pid = open_procedure_of(svc, "an adverse event")
            assert self.plog is not None
            return {"ae_id": await self.plog.add_adverse_event(pid, a.event, by=who)}

        async def h_ae_update(svc: ConsoleService, a: cc.AeUpdate, who: str) -> Any:
            assert self.plog is not None
            await self.plog.update_adverse_event(a.ae_id, a.changes, by=who)
            return {"ae_id": a.ae_id}

        async def ae_list(a: cc.AeList) -> Any:
            pid = a.procedure_id
            if pid is None:
                pid = open_procedure_of(self._console(a), "listing adverse events")
            try:
                return await asyncio.to_thread(queries.list_adverse_events, db, pid)
            except queries.NotFound as exc:
                raise ControlError("not_found", str(exc)) from exc

        async def h_run(svc: ConsoleService, a: cc.Run, who: str) -> Any:
            await baseline_first(svc)
            env = svc.envelope
            # off the event loop: a large or slow file must not delay the poll loop
            proto = await asyncio.to_thread(
                load_protocol, a.protocol, svc.cfg.limits, env.min_tip_c, env.capabilities
            )
            return await svc.run_protocol(proto, tuple(a.probes))

        async def h_freeze(svc: ConsoleService, a: cc.Freeze, who: str) -> Any:
            await baseline_first(svc)
            return await svc.submit(C.AdHocFreeze(a.probe, a.seconds))

        async def h_thaw(svc: ConsoleService, a: cc.Thaw, who: str) -> Any:
            return await svc.submit(C.AdHocThaw(a.probe, a.seconds, a.mode))

        async def h_extend(svc: ConsoleService, a: cc.Extend, who: str) -> Any:
            return await svc.submit(C.Extend(a.seconds))

        async def h_ack(svc: ConsoleService, a: cc.Ack, who: str) -> Any:
            return await svc.acknowledge(who)

        async def h_reset(svc: ConsoleService, a: cc.NoArgs, who: str) -> Any:
            return await svc.reset()

        async def stop(svc: ConsoleService, a: cc.NoArgs, who: str) -> Any:
            return await svc.submit(C.Stop())

        async def cont(svc: ConsoleService, a: cc.NoArgs, who: str) -> Any:
            return await svc.submit(C.Continue())

        async def abort(svc: ConsoleService, a: cc.NoArgs, who: str) -> Any:
            return await svc.submit(C.Abort())

        async def status(a: cc.NoArgs) -> Any:
            return self.status()

        async def procedures(a: cc.NoArgs) -> Any:
            return [p.as_dict() for p in await asyncio.to_thread(queries.list_procedures, db)]

        async def show(a: cc.Show) -> Any:
            try:
                return (await asyncio.to_thread(queries.show_procedure, db, a.id)).as_dict()
            except queries.NotFound as exc:
                raise ControlError("not_found", str(exc)) from exc

        async def do_export(a: cc.Export) -> Any:
            try:
                if a.format == "csv":
                    return await asyncio.to_thread(export.export_csv, db, a.id)
                if a.format in ("fhir", "redcap"):
                    from .store import study_export

                    fn = (
                        study_export.fhir_export
                        if a.format == "fhir"
                        else study_export.redcap_export
                    )
                    return await asyncio.to_thread(fn, db, a.id)
                if self.writer is None:
                    raise ControlError("unavailable", "the log is not open")
                # sealed: one export entry commits to the rows, anchored at once
                return await self.writer.commit_now(
                    lambda s: export.export_sealed(s, a.id), label="export"
                )
            except queries.NotFound as exc:
                raise ControlError("not_found", str(exc)) from exc
            except ValueError as exc:  # a study export that cannot be made, said why
                raise ControlError("rejected", str(exc)) from exc

        async def verify(a: cc.Verify) -> Any:
            return await self._verify(a.anchors)

        return {
            "status": reader("status", status),
            "procedure_open": op("procedure_open", h_open),
            "procedure_close": op("procedure_close", h_close),
            "baseline_pain": op("baseline_pain", h_pain),
            "ae_add": op("ae_add", h_ae_add),
            "ae_update": op("ae_update", h_ae_update),
            "ae_list": reader("ae_list", ae_list),
            "run": op("run", h_run),
            "freeze": op("freeze", h_freeze),
            "thaw": op("thaw", h_thaw),
            "stop": op("stop", stop),
            "continue": op("continue", cont),
            "extend": op("extend", h_extend),
            "abort": op("abort", abort),
            "ack": op("ack", h_ack),
            "reset": op("reset", h_reset),
            "procedures": reader("procedures", procedures),
            "show": reader("show", show),
            "export": reader("export", do_export),
            "verify": reader("verify", verify),
            "record_resend": self._record_resend,
        }

    async def _action(
        self,
        svc: ConsoleService,
        who: str,
        action: str,
        args: dict[str, Any],
        accepted: bool,
        reason: str | None,
    ) -> None:
        if self.plog is None:
            return
        try:
            await self.plog.record_action(
                who=who,
                action=action,
                # NaN spelled out; a profile's text as its digest; unknown arguments' values out
                args=cc.recorded_args(args, action),
                accepted=accepted,
                reason=reason,
                console=svc.id,
                procedure_id=svc.procedure_id,
            )
        except Exception as exc:  # noqa: BLE001 - a refusal must never turn into a crash
            log.error("action_not_recorded", action=action, error=str(exc))

    def _refused(self, peer: Peer) -> None:
        """A peer the socket's group rule refuses: logged and recorded, never silent."""
        log.warning("control_refused", uid=peer.uid, gid=peer.gid, pid=peer.pid)
        if self.plog is None or not self.consoles:
            return
        svc = next(iter(self.consoles.values()))
        task = asyncio.get_running_loop().create_task(
            self._action(
                svc,
                f"uid{peer.uid}",
                "connect",
                {"pid": peer.pid},
                False,
                f"unauthorised: uid={peer.uid} gid={peer.gid} pid={peer.pid}",
            ),
            name="record-refusal",
        )
        self._background.add(task)  # keep a reference until it is written
        task.add_done_callback(self._background.discard)

    async def _verify(self, given: list[Any]) -> dict[str, Any]:
        """The record against its chain and every anchor this daemon knows of (its own
        newest head, the anchor file), plus the heads the client sent."""
        from cryod.integrity import AnchorHead

        from .store.record_check import AnchorSource, anchor_source, check_record

        sources: list[AnchorSource] = []
        try:
            for src in given:
                heads = tuple(
                    AnchorHead(int(h[0]), str(h[1]), h[2] if isinstance(h[2], str) else None, i)
                    for i, h in enumerate(src["heads"], 1)
                )
                sources.append(AnchorSource(str(src["name"]), heads))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ControlError("bad_request", f"anchors: {exc}") from exc
        head = self.writer.audit_head if self.writer else None
        if head is not None:
            sources.append(AnchorSource("cryod (running)", (AnchorHead(head.seq, head.hash),)))
        if self.cfg.anchors.file is not None and self.cfg.anchors.file.exists():
            path = self.cfg.anchors.file
            sources.append(await asyncio.to_thread(anchor_source, path, self.cfg.node.id))
        report = await asyncio.to_thread(check_record, self.cfg.daemon.database, sources)
        return {
            "report": report.as_dict(),
            "lines": report.lines(),
            "exit_code": int(report.exit_code),
        }

    def status(self) -> dict[str, Any]:
        w = self.writer.status() if self.writer else None
        return {
            "version": __version__,
            "session": self.session,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "site": self.cfg.daemon.site,
            "consoles": [svc.status() for svc in self.consoles.values()],
            "writer": None
            if w is None
            else {
                "healthy": w.healthy,
                "reason": w.reason,
                "queued": w.queued_samples,
                "written": w.samples_written,
                "dropped": w.samples_dropped_full,
                "rows_per_s": w.sample_rows_per_s,
                "last_error": self.storage_error,
            },
            "mqtt": [p.status().as_dict() for p in self.publishers] or None,
            "record": None if self.record is None else self.record.status(),
            "audit_head": _head(self.writer),
            "anchors": None if self.anchoring is None else self.anchoring.status(),
        }


class _Shutdown(Exception):
    pass


def _chain_node(engine: Any) -> str | None:
    with engine.connect() as conn:
        return chain.chain_node(conn)


def _start_check(anchors: AnchorFile, node: str, db: Path) -> StartCheck:
    """The database (any revision, read-only) against its anchor file."""
    import sqlite3

    if not db.exists():
        return StartCheck("none")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        try:
            row = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.Error:
            return StartCheck("none")
        head = None if row is None else audit.AuditHead(int(row[0]), str(row[1]))

        def hash_at(seq: int) -> str | None:
            found = con.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
            return None if found is None else str(found[0])

        return start_check(anchors, node, head, hash_at)
    finally:
        con.close()


def _record_start_check(engine: Any, found: StartCheck, path: Path | None) -> None:
    """A restore, entries written while stopped, or a mismatch: in the chain, said once."""
    from .store.chain import ChainedSession

    def head(h: audit.AuditHead | None) -> dict[str, Any] | None:
        return None if h is None else {"seq": h.seq, "hash": h.hash}

    if found.state == "restore":
        kind = "restore"
        payload: dict[str, Any] = {
            "restored": head(found.agreed),
            "abandoned": head(found.newest),
            "detected_by": str(path),
        }
        log.warning("database_restored", detail=found.detail, **payload)
    elif found.state == "unanchored":
        kind = "anchor_gap"
        payload = {"anchored": head(found.agreed), "head": head(found.db_head)}
        log.warning("entries_written_while_stopped", detail=found.detail)
    else:
        kind = "anchor_mismatch"
        payload = {"newest_anchored": head(found.newest), "detail": found.detail}
        log.error("database_disagrees_with_anchors", detail=found.detail)
    with ChainedSession(engine) as session, session.begin():
        audit.append(session, kind, payload)


def _head(writer: Writer | None) -> dict[str, Any] | None:
    head = None if writer is None else writer.audit_head
    return None if head is None else {"seq": head.seq, "hash": head.hash}


def _who(peer: Peer) -> str:
    try:
        return pwd.getpwuid(peer.uid).pw_name
    except KeyError:
        return f"uid{peer.uid}"
