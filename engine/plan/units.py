"""How quantities are written for people: one helper for sizes, one for counted nouns.

Every front-end and engine message formats sizes with `fmt_gib` ("24.0 GiB", "2.7 TiB", never
"2,800 GiB") and counts with `plural` ("1 row", "2 rows").
"""

from __future__ import annotations


def fmt_gib(value: float) -> str:
    """44 -> '44 GiB', 23.99 -> '24.0 GiB', 2800 -> '2.7 TiB'."""
    if value >= 1024:
        return f"{value / 1024:.1f} TiB"
    if value >= 100 or float(value).is_integer():
        return f"{value:.0f} GiB"
    return f"{value:.1f} GiB"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 row', '2 rows', '1,234 rows'; `many` for irregular plurals."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
