"""``cryod``: run the daemon, check a config, or run the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cryod import __version__

__all__ = ["main"]

# exit statuses (docs/cli.md); systemd does not restart the service after 2 or 3
EXIT_OK = 0
EXIT_FAILED = 1  # anything else (a bug: its traceback is in the journal)
EXIT_CONFIG = 2
EXIT_DATABASE = 3

EXIT_CODES = f"""exit status:
  {EXIT_OK}  stopped cleanly (run), config valid (check-config; warnings on stderr), demo done
  {EXIT_FAILED}  any other failure
  {EXIT_CONFIG}  configuration error: every problem listed as FILE: KEY: reason; or (run)
     a [node] id other than the database's chain names (node_mismatch in the journal)
  {EXIT_DATABASE}  the database cannot be used: not SQLite, corrupt, another application's,
     from a newer cryod, or its directory not writable (one line names the file and why);
     (run) it holds samples not yet converted: run `cryod migrate` first; (migrate) the
     conversion stopped: not enough free space, or samples that do not match the chain
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cryod",
        description="Edge daemon for a cryoablation console (research use only: "
        "NICE IPG747/HTG652).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"cryod {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the service")
    run.add_argument("--config", required=True, help="daemon config (TOML)")
    chk = sub.add_parser("check-config", help="validate a config; exit 0, or 2 listing problems")
    chk.add_argument("file")
    mig = sub.add_parser(
        "migrate",
        help="upgrade the database and convert its samples to the compact form (chunked, "
        "resumable; the daemon stopped)",
    )
    mig.add_argument("--config", required=True, help="daemon config (TOML): the database")
    mig.add_argument("--quiet", action="store_true", help="no progress lines")
    demo = sub.add_parser("demo", help="run a procedure on the built-in simulator")
    demo.add_argument("--speed", type=float, default=5.0, help="simulated time speed-up")
    demo.add_argument(
        "--transport", choices=["modbus-tcp", "modbus-rtu", "serial"], default="modbus-tcp"
    )
    demo.add_argument("--protocol", default="morton-neuroma-cazzato2016")
    demo.add_argument("--probes", default="1", help="comma-separated probe numbers")
    demo.add_argument("--db", default=None, help="database path (default: a new temp dir)")
    demo.add_argument("--report", default=None, help="report path (.html, .pdf or .png)")
    demo.add_argument("--quiet", action="store_true", help="no live progress")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "demo":
        from .demo import run_demo

        return _database_checked(lambda: run_demo(args), args.db)
    if args.cmd not in ("check-config", "run", "migrate"):
        return EXIT_CONFIG
    from .config import ConfigError, load_config

    path = args.file if args.cmd == "check-config" else args.config
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    if args.cmd == "check-config":
        for warning in _anchor_warnings(loaded):
            print(f"{path}: warning: {warning}", file=sys.stderr)
        print(f"{path}: ok")
        return EXIT_OK
    db = loaded.cfg.daemon.database
    if args.cmd == "run":
        from .logging import configure_logging

        configure_logging(loaded.cfg.daemon.log_level)
        from .service import Daemon

        return _database_checked(lambda: asyncio.run(Daemon(loaded).run()), db)
    node = loaded.cfg.node.id
    return _database_checked(lambda: _migrate(db, node, quiet=args.quiet), db)


def _database_checked(run: Callable[[], int], database: str | os.PathLike[str] | None) -> int:
    """``run()``, with a database that cannot be used reported in one line (exit 3)
    instead of a traceback: refused at start (``StoreError``), or an SQLite error
    reading it at start (a corrupt page the start-up check does not read)."""
    from .store.db import DATABASE_ERRORS, unreadable
    from .store.errors import StoreError

    try:
        return run()
    except StoreError as exc:
        named = database is None or str(database) in exc.message
        print(f"cryod: {exc.message if named else f'{database}: {exc.message}'}", file=sys.stderr)
    except DATABASE_ERRORS as exc:
        print(f"cryod: {unreadable(database or 'database', exc).message}", file=sys.stderr)
    return EXIT_DATABASE


def _migrate(db: Any, node: str, *, quiet: bool) -> int:
    """``cryod migrate``: the schema upgrade (with its backup), then the samples'
    conversion with a progress line per chunk on stderr and a summary on stdout."""
    from .store import convert, migrate

    report = migrate.upgrade_on_start(db, node=node)
    if report.from_revision != report.to_revision:
        print(
            f"{db}: schema {report.from_revision or 'new'} -> {report.to_revision}"
            + (f" (backup {report.backup_path})" if report.backup_path else ""),
        )

    def show(p: convert.ConvertProgress) -> None:
        if not quiet:
            pct = 100.0 * p.rows_done / p.rows_total if p.rows_total else 100.0
            print(
                f"{db}: {p.rows_done}/{p.rows_total} samples converted ({pct:.1f} %), "
                f"{p.polls} polls, chunk {p.chunks}",
                file=sys.stderr,
                flush=True,
            )

    done = convert.convert(db, progress=show)
    if done.rows_total:
        print(f"{db}: {done.rows_done} samples converted into {done.polls} polls")
    else:
        print(f"{db}: samples already in the compact form")
    return EXIT_OK


def _anchor_warnings(loaded: Any) -> list[str]:
    from .anchoring import placement_warnings

    mqtt = loaded.mqtt
    host = None
    if loaded.cfg.anchors.mqtt and mqtt is not None and mqtt.enabled:
        host = f"unix:{mqtt.unix_socket}" if mqtt.unix_socket is not None else mqtt.host
    return placement_warnings(loaded.cfg.daemon.database, loaded.cfg.anchors.file, host)


if __name__ == "__main__":
    sys.exit(main())
