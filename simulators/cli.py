"""``cryosim``: run the software console and break it on purpose.

``serve`` runs the console (physics and safety) with any of its wire
listeners (Modbus TCP, Modbus RTU on a pty, the line protocol on a pty) and
the control socket; ``fault``/``clear``/``state`` talk to that control
socket; ``scenario`` plays a timed TOML script of faults. See
docs/simulator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from cryod import __version__
from cryod.drivers.profile import ProfileError, load_profile

from .console import FAULT_KINDS, SimConsole
from .control import ControlError, request, serve_control
from .scenario import ScenarioError, load_scenario, run_scenario

__all__ = ["build_parser", "main"]

CONTROL_ENV = "CRYOSIM_CONTROL"
READY_TIMEOUT_S = 10.0


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be a number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port outside 0..65535")
    return host.strip("[]"), number


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryosim",
        description="Software cryoablation console: real wire protocols, "
        "simulated physics, console-side safety and fault injection.",
    )
    parser.add_argument("--version", action="version", version=f"cryosim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the simulated console until SIGTERM/SIGINT")
    serve.add_argument(
        "--profile",
        default=None,
        help="console profile TOML (or a built-in name; default cryosim-8)",
    )
    serve.add_argument(
        "--modbus-tcp",
        type=_host_port,
        metavar="HOST:PORT",
        help="Modbus TCP listener (port 0 = free port)",
    )
    serve.add_argument(
        "--modbus-rtu", metavar="PATH", help="Modbus RTU on a pty; PATH becomes a symlink to it"
    )
    serve.add_argument(
        "--serial", metavar="PATH", help="line protocol on a pty; PATH becomes a symlink to it"
    )
    serve.add_argument(
        "--speed", type=_positive, default=1.0, help="simulated seconds per wall second"
    )
    serve.add_argument("--seed", type=int, default=0, help="seed for sensor noise and corruption")
    serve.add_argument("--control", metavar="PATH", help="control socket for fault injection")
    serve.add_argument("--event-log", metavar="FILE", help="write the ground truth as JSON lines")

    def control_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--control",
            metavar="PATH",
            default=os.environ.get(CONTROL_ENV),
            help=f"control socket of a running 'cryosim serve' (default ${CONTROL_ENV})",
        )

    fault = sub.add_parser("fault", help="inject a fault")
    control_arg(fault)
    fault.add_argument("kind", metavar="KIND", choices=FAULT_KINDS, help=", ".join(FAULT_KINDS))
    fault.add_argument("--probe", type=int, help="probe number (default: every probe)")
    fault.add_argument("--value", type=float, help="fault value (degC, kPa, kPa/s or ms by kind)")
    fault.add_argument(
        "--for", dest="for_s", type=_positive, metavar="SECONDS", help="auto-clear after"
    )

    clear = sub.add_parser("clear", help="clear one fault kind, or every fault")
    control_arg(clear)
    clear.add_argument("kind", metavar="KIND", nargs="?", choices=FAULT_KINDS, help="default: all")

    state = sub.add_parser("state", help="print the true physical state as JSON")
    control_arg(state)

    scen = sub.add_parser("scenario", help="play a timed TOML script of faults")
    scen.add_argument("file", metavar="FILE")
    control_arg(scen)
    return parser


def _need_control(args: argparse.Namespace) -> str:
    if not args.control:
        raise ControlError(f"no control socket: pass --control PATH or set ${CONTROL_ENV}")
    return str(args.control)


def _free_port(host: str) -> int:
    """Bind port 0 to learn a free port (the listener binds it again right after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _serve(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    console = SimConsole(profile, speed=args.speed, seed=args.seed, event_log_path=args.event_log)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    status = 0
    try:
        tasks.append(asyncio.create_task(console.run(), name="cryosim-physics"))
        listeners: list[tuple[str, str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]]] = []
        if args.modbus_tcp:
            from .modbus_server import serve_modbus_tcp

            host, port = args.modbus_tcp
            port = port or _free_port(host)
            listeners.append(
                ("modbus-tcp", f"{host}:{port}", lambda r: serve_modbus_tcp(console, host, port, r))
            )
        if args.modbus_rtu:
            from .modbus_server import serve_modbus_rtu

            rtu = args.modbus_rtu
            listeners.append(("modbus-rtu", rtu, lambda r: serve_modbus_rtu(console, rtu, r)))
        if args.serial:
            from .line_server import serve_line

            line = args.serial
            listeners.append(("serial", line, lambda r: serve_line(console, line, r)))
        if args.control:
            ctl = args.control
            listeners.append(("control", ctl, lambda r: serve_control(console, ctl, r)))
        print(
            f"cryosim {__version__}: {profile.console.model} serial {console.serial} "
            f"gas {profile.console.gas} speed {args.speed:g}x seed {args.seed}",
            flush=True,
        )
        for name, where, start in listeners:
            ready = asyncio.Event()
            task = asyncio.create_task(start(ready), name=f"cryosim-{name}")
            tasks.append(task)
            waiter: asyncio.Task[Any] = asyncio.create_task(ready.wait())
            started, _ = await asyncio.wait(
                {waiter, task}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if waiter not in started:
                exc = task.exception() if task.done() else None
                print(
                    f"cryosim: {name} on {where} failed to start: {exc or 'timeout'}",
                    file=sys.stderr,
                )
                return 1
            print(f"{name} listening on {where}", flush=True)
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        waiting: set[asyncio.Task[Any]] = {stopper, *tasks}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for ended in done - {stopper}:
            # a listener or the physics task ended on its own: that is a failure
            exc = None if ended.cancelled() else ended.exception()
            print(f"cryosim: {ended.get_name()} stopped: {exc!r}", file=sys.stderr)
            status = 1
        return status
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        console.log_event("power_off")
        console.close()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "fault":
            req = {"cmd": "fault", "kind": args.kind, "probe": args.probe, "value": args.value}
            req["for_s"] = args.for_s
            request(_need_control(args), req)
            print(f"injected {args.kind}")
            return 0
        if args.command == "clear":
            request(_need_control(args), {"cmd": "clear", "kind": args.kind})
            print(f"cleared {args.kind or 'all faults'}")
            return 0
        if args.command == "state":
            _print_json(request(_need_control(args), {"cmd": "state"})["state"])
            return 0
        if args.command == "scenario":
            scenario = load_scenario(args.file)
            if not args.control:
                print(f"{args.file}: valid, {len(scenario.step)} steps (no --control: not played)")
                for step in scenario.ordered():
                    print(f"{step.at_s:8.3f} s  {step.describe()}")
                return 0
            path = str(args.control)
            run_scenario(scenario, lambda req: request(path, req))
            return 0
    except (ProfileError, ScenarioError) as exc:
        print(f"cryosim: {exc}", file=sys.stderr)
        return 2
    except (ControlError, OSError) as exc:
        print(f"cryosim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
