"""The report's errors: each message says why the report could not be made and what to do."""

from __future__ import annotations

__all__ = ["ReportDependencyError", "ReportError"]


class ReportError(ValueError):
    """The report could not be made; the message says why and what to do (a ValueError,
    so CLIs that report ValueError/LookupError cleanly handle it)."""


class ReportDependencyError(ReportError, ImportError):
    """matplotlib (the ``report`` extra) is not installed."""
