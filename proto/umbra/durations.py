"""Durations as both CLIs, the collector's config file and environment, and the HTTP API take them.

A duration always carries its unit ("500ms", "90s", "15m", "24h", "30d"): a bare "30" is refused,
because one command's seconds were another's days and the reader cannot tell which it meant.
"""

from __future__ import annotations

UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
FORMS = "500ms, 90s, 15m, 24h, 30d"
MAX_SECONDS = 100 * 365 * 86400.0


def parse_duration(
    text: str, *, minimum: float = 0.0, maximum: float = MAX_SECONDS, zero: bool = False
) -> float:
    """ "90s", "15m", "24h", "30d", "500ms" -> seconds. ValueError (one line naming the unit forms)
    when the unit is missing, the number malformed, or the value outside [minimum, maximum]
    (0 only with `zero`)."""
    raw = text.strip().lower()
    number, unit = raw, ""
    for suffix in sorted(UNITS, key=len, reverse=True):
        if raw.endswith(suffix):
            number, unit = raw[: -len(suffix)], suffix
            break
    if not unit:
        try:
            float(raw)
        except ValueError:
            raise ValueError(f"not a duration: {text!r} (a number and a unit: {FORMS})") from None
        raise ValueError(f"duration {text!r} needs a unit: {FORMS}")
    try:
        value = float(number.strip()) * UNITS[unit]
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (a number and a unit: {FORMS})") from None
    if value != value or (value == 0 and not zero) or value < 0:
        raise ValueError(f"duration {text!r} must be {'0 or more' if zero else 'more than 0'}")
    if value == 0 and zero:
        return 0.0
    if not minimum <= value <= maximum:
        raise ValueError(f"duration {text!r} out of range ({describe(minimum)} to {describe(maximum)})")
    return value


def describe(seconds: float) -> str:
    """Seconds as the shortest exact duration text: 0.3 -> "300ms", 90 -> "90s", 86400 -> "1d"."""
    for unit in ("d", "h", "m", "s"):
        size = UNITS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"
