"""Times as the read side shows them."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_seconds(when: float) -> str:
    """Unix seconds -> ISO 8601 UTC ("" for 0, i.e. never)."""
    if when <= 0:
        return ""
    return datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_day(when: float) -> str:
    """Unix seconds -> "YYYY-MM-DD" (UTC), the key of a daily snapshot."""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%d")


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """ "90" or "90s", "15m", "24h", "30d" -> seconds. ValueError if malformed or not positive."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:], 0.0)
    number = raw[:-1] if unit else raw
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 24h, 30d)") from None
    if not 0 < value < 100 * 365 * 86400:
        raise ValueError(f"duration out of range: {text!r}")
    return value
