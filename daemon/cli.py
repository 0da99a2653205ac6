"""``cryod``: run the daemon, check a config, or run the demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from cryod import __version__

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cryod",
        description="Edge daemon for a cryoablation console (research use only: "
        "NICE IPG747/HTG652).",
    )
    p.add_argument("--version", action="version", version=f"cryod {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the service")
    run.add_argument("--config", required=True, help="daemon config (TOML)")
    chk = sub.add_parser("check-config", help="validate a config; exit 0, or 2 listing problems")
    chk.add_argument("file")
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
    if args.cmd == "check-config":
        from .config import ConfigError, load_config

        try:
            loaded = load_config(args.file)
        except ConfigError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            return 2
        for warning in _anchor_warnings(loaded):
            print(f"{args.file}: warning: {warning}", file=sys.stderr)
        print(f"{args.file}: ok")
        return 0
    if args.cmd == "run":
        from .config import ConfigError, load_config
        from .logging import configure_logging

        try:
            loaded = load_config(args.config)
        except ConfigError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            return 2
        configure_logging(loaded.cfg.daemon.log_level)
        from .service import Daemon

        return asyncio.run(Daemon(loaded).run())
    if args.cmd == "demo":
        from .demo import run_demo

        return run_demo(args)
    return 2


def _anchor_warnings(loaded: Any) -> list[str]:
    from .anchoring import placement_warnings

    mqtt = loaded.mqtt
    host = None
    if loaded.cfg.anchors.mqtt and mqtt is not None and mqtt.enabled:
        host = f"unix:{mqtt.unix_socket}" if mqtt.unix_socket is not None else mqtt.host
    return placement_warnings(loaded.cfg.daemon.database, loaded.cfg.anchors.file, host)


if __name__ == "__main__":
    sys.exit(main())
