"""How quantities are written for people: sizes, counted nouns and durations.

Every front-end and engine message formats sizes with `fmt_gib` ("24.0 GiB", "2.7 TiB", never
"2,800 GiB"), counts with `plural` ("1 row", "2 rows"), an estimated duration with `fmt_duration`
("3 h 05 min") and a running clock (elapsed, ETA) with `fmt_clock` ("1:02:05").
"""

from __future__ import annotations

GIB = 1024**3  # bytes in a GiB: every size the product shows is in GiB


def fmt_gib(value: float) -> str:
    """44 -> '44 GiB', 23.99 -> '24.0 GiB', 2800 -> '2.7 TiB'."""
    if value >= 1024:
        return f"{value / 1024:.1f} TiB"
    if value >= 100 or float(value).is_integer():
        return f"{value:.0f} GiB"
    return f"{value:.1f} GiB"


def fmt_bytes(n: int) -> str:
    """An exact byte count with its size: 123456789 -> '117.7 MiB (123,456,789 bytes)'."""
    if abs(n) < 1024:
        return f"{n:,} bytes"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if abs(size) < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit} ({n:,} bytes)"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 row', '2 rows', '1,234 rows'; `many` for irregular plurals."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def fmt_duration(seconds: float | None) -> str:
    """An estimate, rounded to minutes: '1 min', '3 h 05 min', '2.5 days'; '-' when unknown."""
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{hours / 24:.1f} days"


def fmt_clock(seconds: float | None) -> str:
    """A running clock (elapsed, ETA) to the second: '0:59', '1:02:05'; '-' when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def shown(item: object, limit: int = 80) -> str:
    """A value as quoted in an error line: its repr, cut to `limit` characters (an override, a
    profile's field: it may hold anything, of any size)."""
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 4] + "..." + text[-1]
