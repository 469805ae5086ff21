"""Times as the read side shows them."""

from __future__ import annotations

from datetime import UTC, datetime

from umbra.durations import parse_duration


def iso_seconds(when: float) -> str:
    """Unix seconds -> ISO 8601 UTC ("" for 0, i.e. never)."""
    if when <= 0:
        return ""
    return datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_day(when: float) -> str:
    """Unix seconds -> "YYYY-MM-DD" (UTC), the key of a daily snapshot."""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%d")


# Durations are parsed in one place for both CLIs and the API (a unit is required).
__all__ = ["iso_seconds", "parse_duration", "utc_day"]
