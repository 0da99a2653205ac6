"""The live view behind ``cryoctl watch``: one daemon's status, refreshed in place.

The watcher asks the daemon for its status (``status_source``, wired by
``run_watch`` to the control socket) a few times a second and draws it with
``rich``. It only reads: it never sends a command, so it cannot change what
the console does.

- On a terminal the view is redrawn in place (``rich.live.Live``, no refresh
  thread: the loop refreshes after each poll).
- On a dumb terminal (``TERM=dumb``) or when output is not a terminal (a
  pipe, a log), each refresh prints a plain-text block with no escape codes.
- When the daemon cannot be reached the view says so, with the reason, and
  keeps retrying; Ctrl-C ends it with exit status 0.

Readings that are not valid are shown as their validity, never as a number,
and the trend keeps a gap for them. The snapshot has the shape of MQTT
telemetry (``telemetry.payloads.snapshot_body``): a reading is a number or
null, with its validity beside it (``tip_validity``, ``supply_validity``...).
The link is shown as the daemon judges it (``up``, ``silent`` for N s,
``DOWN``), not as the driver's connection flag alone.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = [
    "TREND_LEN",
    "Spark",
    "Trends",
    "WatchState",
    "render_plain",
    "render_status",
    "run_watch",
    "sparkline",
    "watch",
]

StatusSource = Callable[[], Awaitable[Any]]

TREND_LEN = 30
BLOCKS = "▁▂▃▄▅▆▇█"
ASCII_BLOCKS = "_.-~=+*#"
MIN_SPAN_C = 2.0  # a trend never magnifies less than 2 C into the full height
PRIORITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}
PRIORITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}
VALIDITY_STYLE = {"valid": "green", "stale": "yellow", "invalid": "bold red"}
STALE_POLL_MS = 1000.0
DEFAULT_TIMEOUT_S = 2.0
RETRY_MIN_S = 0.5  # while unreachable, not more often than this
PLAIN_WIDTH = 100
PLAIN_REPEAT_S = 5.0  # dumb terminal: an unchanged "unreachable" is printed this often


def sparkline(values: Sequence[float | None], *, ascii_only: bool = False) -> str:
    """One character per value, scaled to the window; None (no usable reading) is a space."""
    blocks = ASCII_BLOCKS if ascii_only else BLOCKS
    usable = [v for v in values if v is not None and math.isfinite(v)]
    if not usable:
        return " " * len(values)
    lo, hi = min(usable), max(usable)
    if hi - lo < MIN_SPAN_C:
        mid = (hi + lo) / 2.0
        lo, hi = mid - MIN_SPAN_C / 2.0, mid + MIN_SPAN_C / 2.0
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
            continue
        level = int((v - lo) / (hi - lo) * (len(blocks) - 1) + 0.5)
        out.append(blocks[max(0, min(len(blocks) - 1, level))])
    return "".join(out)


class Spark:
    """A sparkline that fits its cell: when space is short it keeps the newest values."""

    def __init__(
        self,
        values: Sequence[float | None],
        *,
        ascii_only: bool,
        width: int = TREND_LEN,
        style: str = "cyan",
    ) -> None:
        # right-aligned in a fixed width, so the column does not grow as values arrive
        self.line = sparkline(values, ascii_only=ascii_only)[-width:].rjust(width)
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(0, options.max_width)
        yield Text(self.line[-width:] if width else "", style=self.style, no_wrap=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(4, len(self.line)), max(1, len(self.line)))


@dataclass
class Trends:
    """The last ``TREND_LEN`` tip temperatures per (console, probe), kept by the watcher."""

    maxlen: int = TREND_LEN
    values: dict[tuple[str, int], deque[tuple[float | None, float | None]]] = field(
        default_factory=dict
    )
    _last_t: dict[str, Any] = field(default_factory=dict)

    def add_status(self, status: Mapping[str, Any]) -> None:
        for console in _list(status.get("consoles")):
            cid = str(console.get("id", "?"))
            snap = console.get("snapshot")
            if not isinstance(snap, Mapping):
                continue
            t_ms = snap.get("ts_ms")
            if t_ms is not None and self._last_t.get(cid) == t_ms:
                continue  # the same snapshot as last time: no new point
            self._last_t[cid] = t_ms
            t_s = None if t_ms is None else float(t_ms) / 1000.0
            for probe in _list(snap.get("probes")):
                if "probe" not in probe:
                    continue
                key = (cid, int(probe["probe"]))
                series = self.values.setdefault(key, deque(maxlen=self.maxlen))
                series.append((t_s, _usable_tip(probe)))

    def series(self, console_id: str, probe: int) -> list[float | None]:
        return [v for _, v in self.values.get((console_id, probe), ())]

    def rate_c_per_s(self, console_id: str, probe: int, window_s: float = 5.0) -> float | None:
        """Slope over about the last ``window_s`` seconds of usable readings."""
        points = [
            (t, v)
            for t, v in self.values.get((console_id, probe), ())
            if t is not None and v is not None
        ]
        if len(points) < 2:
            return None
        t_end, v_end = points[-1]
        t0, v0 = next((t, v) for t, v in points if t_end - t <= window_s)
        if t_end <= t0:
            return None
        return (v_end - v0) / (t_end - t0)


@dataclass
class WatchState:
    """What the view shows: the last status, or why there is none."""

    trends: Trends = field(default_factory=Trends)
    status: dict[str, Any] | None = None
    error: str | None = None
    failures: int = 0
    last_ok_mono: float | None = None

    async def poll(self, source: StatusSource, timeout_s: float) -> bool:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for returns the result when the
            # source finishes in the same loop pass as a cancel, and Ctrl-C is lost
            async with asyncio.timeout(timeout_s):
                result = await source()
            if not isinstance(result, Mapping):
                raise TypeError(f"status is a {type(result).__name__}, not an object")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means "unreachable, retry"
            self.error = _reason(exc)
            self.failures += 1
            return False
        self.status = dict(result)
        self.error = None
        self.failures = 0
        self.last_ok_mono = time.monotonic()
        self.trends.add_status(self.status)
        return True


_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (FileNotFoundError, "no control socket there: is cryod running?"),
    (ConnectionRefusedError, "nobody is listening: is cryod running?"),
    (PermissionError, "not allowed: are you in the cryod group?"),
)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    text = str(exc).strip()
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    hint = next((h for kind, h in _HINTS if isinstance(exc, kind)), None)
    return f"{reason} ({hint})" if hint else reason


def _list(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _usable_tip(probe: Mapping[str, Any]) -> float | None:
    """The tip reading when the daemon sent one (an unusable one is null)."""
    value = probe.get("tip_c")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# ---- rendering -------------------------------------------------------------------------
def _fmt_num(value: Any, digits: int = 1, unit: str = "") -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "--"
    return f"{value:.{digits}f}{unit}"


def _countdown(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "--:--"
    total = math.ceil(seconds)
    return f"{total // 60:02d}:{total % 60:02d}"


def _reading(value: Any, validity: Any, unit: str, digits: int = 0) -> Text:
    """A reading and its validity: the number when the daemon sent one (an unusable
    reading is null), else the validity."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Text(_fmt_num(value, digits, f" {unit}"))
    if validity is None:
        return Text("--", style="dim")
    return Text(str(validity).upper(), style=VALIDITY_STYLE.get(str(validity), "bold red"))


def _flag(value: Any, on: str = "OPEN", off: str = "closed") -> Text:
    if value is None:
        return Text("?", style="dim")
    return Text(on, style="bold cyan") if value else Text(off, style="dim")


def _yesno(value: Any, *, bad_when: bool) -> Text:
    if value is None:
        return Text("?", style="dim")
    return Text("yes" if value else "no", style="bold red" if bool(value) == bad_when else "")


def _kv(*pairs: tuple[str, Text | str]) -> Text:
    out = Text()
    for i, (key, value) in enumerate(pairs):
        if i:
            out.append("  ")
        out.append(f"{key} ", style="bold")
        out.append(value if isinstance(value, Text) else Text(str(value)))
    return out


def _header(status: Mapping[str, Any]) -> Text:
    writer = status.get("writer") if isinstance(status.get("writer"), Mapping) else None
    if writer is None:
        log = Text("?", style="dim")
    else:
        healthy = bool(writer.get("healthy"))
        log = Text(
            f"{'ok' if healthy else 'FAILING'} (queued {writer.get('queued', '?')}, "
            f"dropped {writer.get('dropped', '?')})",
            style="" if healthy else "bold red",
        )
    mqtt = status.get("mqtt")
    if isinstance(mqtt, Mapping):
        mqtt_text = Text("connected" if mqtt.get("connected") else "not connected")
    else:
        mqtt_text = Text("off", style="dim")
    return _kv(
        ("cryod", str(status.get("version", "?"))),
        ("site", str(status.get("site", "?"))),
        ("session", str(status.get("session", "?"))),
        ("uptime", _fmt_num(status.get("uptime_s"), 0, " s")),
        ("log", log),
        ("mqtt", mqtt_text),
    )


def _engine_line(console: Mapping[str, Any]) -> Text:
    engine = _map(console.get("engine"))
    step = engine.get("step")
    steps = engine.get("steps")
    proc = console.get("procedure") if isinstance(console.get("procedure"), Mapping) else None
    if proc is None:
        proc_text = Text("none", style="dim")
    else:
        proc_text = Text(f"#{proc.get('id', '?')} {'open' if proc.get('open') else 'closed'}")
    state = str(engine.get("state", "?"))
    phase = engine.get("phase")
    return _kv(
        ("engine", Text(state.upper(), style="bold magenta" if state != "idle" else "")),
        ("phase", Text(str(phase) if phase else "--", style=_phase_style(phase))),
        ("step", f"{step}/{steps}" if step is not None and steps is not None else "--"),
        ("left", Text(_countdown(engine.get("remaining_s")), style="bold")),
        ("protocol", str(engine.get("protocol") or "--")),
        ("procedure", proc_text),
    )


def _phase_style(phase: Any) -> str:
    return {"freeze": "bold blue", "thaw": "bold yellow"}.get(str(phase), "")


def _probe_table(
    console: Mapping[str, Any], snap: Mapping[str, Any], trends: Trends, ascii_only: bool
) -> Table:
    cid = str(console.get("id", "?"))
    engine = _map(console.get("engine"))
    active = set(engine.get("probes") or [])
    # ASCII: no box at all (the narrowest); numbers are never cut, the trend gives way
    table = Table(box=None if ascii_only else box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    deg = "C" if ascii_only else "°C"
    table.add_column("probe", justify="right", no_wrap=True, min_width=5)
    table.add_column(f"tip {deg}", justify="right", no_wrap=True, min_width=7)
    table.add_column("trend", justify="left", max_width=TREND_LEN)
    table.add_column(f"{deg}/s", justify="right", no_wrap=True, min_width=6)
    table.add_column("validity", justify="left", no_wrap=True, min_width=8)
    table.add_column("return kPa", justify="right", no_wrap=True, min_width=6)
    table.add_column("freeze", justify="left", no_wrap=True, min_width=6)
    table.add_column("thaw", justify="left", no_wrap=True, min_width=4)
    for probe in _list(snap.get("probes")):
        number = probe.get("probe", "?")
        validity = str(probe.get("tip_validity", "?"))
        tip = _usable_tip(probe)
        tip_text = (
            Text(f"{tip:.1f}", style="bold")
            if tip is not None
            else Text("--", style=VALIDITY_STYLE.get(validity, "bold red"))
        )
        series = trends.series(cid, int(number)) if isinstance(number, int) else []
        rate = trends.rate_c_per_s(cid, int(number)) if isinstance(number, int) else None
        marker = "*" if number in active else " "
        table.add_row(
            f"{marker}{number}",
            tip_text,
            Spark(series, ascii_only=ascii_only),
            _fmt_num(rate, 1),
            Text(validity, style=VALIDITY_STYLE.get(validity, "bold red")),
            _fmt_num(probe.get("return_kpa"), 0),
            _flag(probe.get("freeze_open")),
            _flag(probe.get("thaw_on"), on="ON", off="off"),
        )
    return table


def _supply_line(snap: Mapping[str, Any], ascii_only: bool) -> Text:
    deg = "C" if ascii_only else "°C"
    return _kv(
        ("supply", _reading(snap.get("supply_kpa"), snap.get("supply_validity"), "kPa")),
        ("cylinder", _reading(snap.get("cylinder_kpa"), snap.get("cylinder_validity"), "kPa")),
        ("skin", _reading(snap.get("skin_c"), snap.get("skin_validity"), deg, 1)),
        ("master valve", _flag(snap.get("master_open"))),
    )


def _lease_line(snap: Mapping[str, Any]) -> Text:
    lease = snap.get("lease") if isinstance(snap.get("lease"), Mapping) else None
    if lease is None:
        return _kv(("lease", Text("?", style="dim")))
    faults = snap.get("faults")
    fault_list = [str(f) for f in faults] if isinstance(faults, Sequence) and faults else []
    if isinstance(faults, Mapping):
        fault_list = [str(k) for k, v in faults.items() if v]
    return _kv(
        ("lease", Text("armed" if lease.get("armed") else "not armed")),
        ("timeout", _fmt_num(lease.get("timeout_ms"), 0, " ms")),
        ("expired", _yesno(lease.get("expired"), bad_when=True)),
        ("expiries", str(lease.get("expiry_count", "?"))),
        ("faults", Text(", ".join(fault_list), style="bold red") if fault_list else "none"),
    )


def _link_line(console: Mapping[str, Any]) -> Text:
    link = _map(console.get("link"))
    poll = _map(console.get("poll"))
    age = poll.get("last_poll_age_ms")
    age_text = Text(_fmt_num(age, 0, " ms"))
    if isinstance(age, int | float) and age > STALE_POLL_MS:
        age_text.stylize("bold red")
    pairs: list[tuple[str, Text | str]] = [
        ("link", _link_state(link)),
        ("timeouts", str(link.get("timeouts", "?"))),
        ("retries", str(link.get("retries", "?"))),
        ("bad frames", str(link.get("bad_frames", "?"))),
        ("reconnects", str(link.get("reconnects", "?"))),
        ("poll", _fmt_num(poll.get("hz"), 0, " Hz")),
        ("late", str(poll.get("late_polls", "?"))),
        ("age", age_text),
    ]
    line = _kv(*pairs)
    if link.get("last_error"):
        line.append("\n")
        line.append("last error ", style="bold")
        line.append(str(link["last_error"]), style="red")
    return line


def _link_state(link: Mapping[str, Any]) -> Text:
    """``up``; ``SILENT 12 s`` (connected, but no snapshot for longer than the stale
    rule); ``DOWN``. A daemon that does not say (an older one): its connection flag."""
    state = link.get("state")
    if state is None:
        connected = link.get("connected")
        if connected is None:
            return Text("?", style="dim")
        state = "up" if connected else "down"
    if state == "up":
        return Text("up", style="green")
    age = link.get("snapshot_age_s")
    silent = "" if not isinstance(age, int | float) else f" {age:.1f} s"
    if state == "silent":
        return Text(f"SILENT{silent or ' (no snapshot yet)'}", style="bold red")
    return Text(f"DOWN{f', silent{silent}' if silent else ''}", style="bold red")


def _alarm_lines(console: Mapping[str, Any]) -> Text:
    alarms = sorted(
        _list(console.get("alarms")),
        key=lambda a: (PRIORITY_ORDER.get(str(a.get("priority")), 9), str(a.get("raised_at"))),
    )
    if not alarms:
        return Text("alarms: none", style="green")
    out = Text()
    for i, a in enumerate(alarms):
        prio = str(a.get("priority", "?"))
        style = PRIORITY_STYLE.get(prio, "")
        if i:
            out.append("\n")
        out.append(f"{prio.upper():<6} ", style=style)
        out.append(str(a.get("code", "?")), style=style)
        probe = a.get("probe")
        out.append(f" probe {probe}" if probe else " console")
        if a.get("message"):
            out.append(f": {a['message']}")
        flags = ["acked" if a.get("acked") else "NOT ACKED"]
        if a.get("latched"):
            flags.append("latched")
        if a.get("raised_at"):
            flags.append(f"since {a['raised_at']}")
        out.append(f" ({', '.join(flags)})", style="dim")
    return out


def _console_panel(console: Mapping[str, Any], trends: Trends, ascii_only: bool) -> Panel:
    parts: list[RenderableType] = [_engine_line(console)]
    snap = console.get("snapshot")
    if isinstance(snap, Mapping):
        parts += [_probe_table(console, snap, trends, ascii_only), _supply_line(snap, ascii_only)]
        parts.append(_lease_line(snap))
    else:
        parts.append(Text("no data from the console (link down?)", style="bold red"))
    parts += [_link_line(console), _alarm_lines(console)]
    alarms = _list(console.get("alarms"))
    top = min((PRIORITY_ORDER.get(str(a.get("priority")), 9) for a in alarms), default=9)
    border = {0: "red", 1: "yellow", 2: "cyan"}.get(top, "blue")
    title = f"console {console.get('id', '?')} ({console.get('driver', '?')})"
    return Panel(
        Group(*parts),
        title=title,
        title_align="left",
        border_style=border,
        box=box.ASCII if ascii_only else box.ROUNDED,
    )


def render_status(
    status: Mapping[str, Any] | None,
    trends: Trends | None = None,
    *,
    error: str | None = None,
    failures: int = 0,
    last_ok_s_ago: float | None = None,
    ascii_only: bool = False,
) -> RenderableType:
    """The whole view for one status (or for why there is none)."""
    trends = trends or Trends()
    parts: list[RenderableType] = []
    if error is not None:
        msg = Text(f"daemon unreachable: {error}, retrying", style="bold red")
        if failures > 1:
            msg.append(f" (attempt {failures})", style="red")
        if last_ok_s_ago is not None:
            msg.append(f"; last status {last_ok_s_ago:.0f} s ago (shown dimmed below)", style="red")
        parts.append(msg)
    if status is not None:
        parts.append(_header(status))
        consoles = _list(status.get("consoles"))
        if not consoles:
            parts.append(Text("no consoles configured", style="dim"))
        body = [_console_panel(c, trends, ascii_only) for c in consoles]
        parts += body if error is None else [Group(*body)]
    elif error is None:
        parts.append(Text("waiting for the daemon...", style="dim"))
    group = Group(*parts)
    if error is not None and status is not None:
        return Panel(
            group, style="dim", border_style="red", box=box.ASCII if ascii_only else box.HEAVY
        )
    return group


def render_plain(
    status: Mapping[str, Any] | None,
    trends: Trends | None = None,
    *,
    error: str | None = None,
    failures: int = 0,
    last_ok_s_ago: float | None = None,
    width: int = PLAIN_WIDTH,
    ascii_only: bool = True,
) -> str:
    """The view as plain text: no colours, no cursor movement, no escape codes."""
    buf = io.StringIO()
    plain = Console(
        file=buf,
        width=width,
        force_terminal=False,
        color_system=None,
        no_color=True,
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )
    plain.print(
        render_status(
            status,
            trends,
            error=error,
            failures=failures,
            last_ok_s_ago=last_ok_s_ago,
            ascii_only=ascii_only,
        )
    )
    return buf.getvalue()


def _is_dumb(console: Console) -> bool:
    return not console.is_terminal or console.is_dumb_terminal


def _utf8(console: Console) -> bool:
    return console.encoding.lower().replace("-", "").startswith("utf8")


def _view_args(state: WatchState) -> dict[str, Any]:
    ago = None
    if state.error is not None and state.last_ok_mono is not None:
        ago = time.monotonic() - state.last_ok_mono
    return {
        "error": state.error,
        "failures": state.failures,
        "last_ok_s_ago": ago,
    }


async def watch(
    status_source: StatusSource,
    *,
    refresh_hz: float = 4.0,
    console: Console | None = None,
    once: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Show the daemon's status until cancelled; returns the exit status.

    ``once``: poll and draw one time (0 if the daemon answered, 1 if not).
    Cancellation (Ctrl-C under ``asyncio.run``) ends the view cleanly; use
    ``run_watch`` for the exit status 0 on Ctrl-C.
    """
    if not refresh_hz > 0:
        raise ValueError("refresh_hz must be positive")
    console = console or Console()
    period_s = 1.0 / refresh_hz
    state = WatchState()
    dumb = _is_dumb(console)
    try:
        if once:
            ok = await state.poll(status_source, timeout_s)
            if dumb:
                _print_plain(console, state)
            else:
                console.print(
                    render_status(
                        state.status,
                        state.trends,
                        **_view_args(state),
                        ascii_only=not _utf8(console),
                    )
                )
            return 0 if ok else 1
        if dumb:
            await _loop_plain(status_source, state, console, period_s, timeout_s)
        else:
            await _loop_live(status_source, state, console, period_s, timeout_s)
    except KeyboardInterrupt:
        return 0
    return 0  # pragma: no cover - the loops only end by cancellation or Ctrl-C


def _print_plain(console: Console, state: WatchState) -> None:
    stamp = time.strftime("%H:%M:%S")
    text = render_plain(
        state.status if state.error is None else None,
        state.trends,
        **_view_args(state),
        width=console.width if console.width > 40 else PLAIN_WIDTH,
        ascii_only=not _utf8(console),
    )
    console.file.write(f"--- {stamp} ---\n{text}")
    console.file.flush()


async def _sleep_rest(started: float, period_s: float) -> None:
    await asyncio.sleep(max(0.0, period_s - (time.monotonic() - started)))


async def _loop_plain(
    source: StatusSource, state: WatchState, console: Console, period_s: float, timeout_s: float
) -> None:
    last_error: str | None = None
    last_error_print = -math.inf
    while True:
        started = time.monotonic()
        ok = await state.poll(source, timeout_s)
        if ok:
            last_error = None
            _print_plain(console, state)
        elif state.error != last_error or started - last_error_print >= PLAIN_REPEAT_S:
            last_error, last_error_print = state.error, started
            _print_plain(console, state)
        await _sleep_rest(started, period_s if ok else max(period_s, RETRY_MIN_S))


async def _loop_live(
    source: StatusSource, state: WatchState, console: Console, period_s: float, timeout_s: float
) -> None:
    ascii_only = not _utf8(console)
    with Live(
        Text("connecting to the daemon...", style="dim"),
        console=console,
        auto_refresh=False,  # no refresh thread: this loop refreshes after each poll
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:
        while True:
            started = time.monotonic()
            ok = await state.poll(source, timeout_s)
            live.update(
                render_status(
                    state.status, state.trends, **_view_args(state), ascii_only=ascii_only
                ),
                refresh=True,
            )
            await _sleep_rest(started, period_s if ok else max(period_s, RETRY_MIN_S))


def run_watch(socket_path: str, refresh_hz: float = 4.0) -> int:
    """Entry point for ``cryoctl watch``: the view of the daemon behind ``socket_path``."""
    from .control import call

    async def source() -> Any:
        return await call(socket_path, "status", timeout_s=DEFAULT_TIMEOUT_S)

    try:
        return asyncio.run(watch(source, refresh_hz=refresh_hz))
    except KeyboardInterrupt:
        return 0
