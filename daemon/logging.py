"""Structured logging: JSON lines for journald, readable text on a terminal.

Under systemd, stdout goes to the journal, which reads a `<N>` syslog
priority prefix at the start of each line (SyslogLevelPrefix=yes), so every
JSON line starts with one and `journalctl -p err` works. On a terminal the
output is rendered for people instead.

Two rules from the safety case are enforced here rather than left to every
call site: tracebacks never include local variables (a frame may hold a
patient reference), and any field whose key names patient data is replaced
before rendering, at any depth, whatever logger produced it. Records from
standard-library loggers (pymodbus, aiomqtt, SQLAlchemy, alembic) go through
the same chain.
"""

from __future__ import annotations

import json as _json
import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

# Keys that name patient data. A pseudonymous reference is still personal
# data under UK GDPR, so it stays in the procedure database, never in logs.
_PATIENT_KEY = re.compile(
    r"patient|^(mrn|nhs_?(number|no)|dob|date_of_birth|birth_date|hospital_number)$",
    re.IGNORECASE,
)

# journald / syslog priorities (sd-daemon.h): <2> crit ... <7> debug.
_PRIORITY = {
    "critical": 2,
    "error": 3,
    "exception": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

_handler: logging.Handler | None = None


def is_patient_key(key: object) -> bool:
    return isinstance(key, str) and _PATIENT_KEY.search(key) is not None


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_patient_key(k) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    return value


def redact_patient_fields(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every patient-data key, at any depth, before rendering."""
    for key in list(event_dict):
        if key in ("exc_info", "stack_info", "_record", "_from_structlog"):
            continue
        if is_patient_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


class JournalJSONRenderer:
    """One JSON object per line, prefixed with its journald priority."""

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", "info")).lower()
        priority = _PRIORITY.get(level, 6)
        line = _json.dumps(event_dict, default=str, ensure_ascii=False, separators=(",", ":"))
        return f"<{priority}>{line}"


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_patient_fields,
    ]


def _renderer_chain(json: bool, colors: bool) -> list[Processor]:
    if json:
        return [
            # show_locals off: frames may hold patient references.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            JournalJSONRenderer(),
        ]
    return [
        structlog.dev.ConsoleRenderer(
            colors=colors,
            exception_formatter=structlog.dev.RichTracebackFormatter(
                show_locals=False, color_system="truecolor" if colors else None
            ),
        )
    ]


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    level: str = "info", json: bool | None = None, stream: IO[str] | None = None
) -> None:
    """Route structlog and standard-library logging to `stream`.

    `json=None` chooses by the stream: JSON lines with priority prefixes when
    it is not a terminal (journald, files, pipes), human-readable text when it
    is. Calling it again replaces the previous configuration. `stream`
    defaults to sys.stdout as it is at call time.
    """
    global _handler
    if stream is None:
        stream = sys.stdout
    try:
        numeric = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}"
        ) from None
    tty = _is_tty(stream)
    use_json = (not tty) if json is None else json

    shared = _shared_processors()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderer_chain(use_json, colors=tty),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    # third-party chatter: migrations print every plugin at INFO; paho repeats a TLS
    # refusal at ERROR on every retry (the publisher reports it once in its status)
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("cryod.telemetry.paho").setLevel(logging.CRITICAL)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def reset_logging() -> None:
    """Undo configure_logging (tests, and before a stream is closed)."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    structlog.reset_defaults()


def get_logger(name: str, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structured logger named after its module (`get_logger(__name__)`)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger
