"""Text meters shared by the hardware and memory panels."""

from __future__ import annotations

from rich.text import Text

FULL, EMPTY, PEAK = "█", "░", "▏"


def level_style(fraction: float) -> str:
    if fraction >= 0.95:
        return "bold red"
    if fraction >= 0.8:
        return "yellow"
    return "green"


def meter(fraction: float | None, width: int, peak: float | None = None) -> Text:
    """A bar `width` cells wide filled to `fraction` (0..1), with an optional peak marker."""
    width = max(width, 1)
    if fraction is None:
        return Text("·" * width, style="dim")
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    bar = Text(FULL * filled, style=level_style(fraction))
    rest = width - filled
    mark = None
    if peak is not None and peak > fraction:
        mark = min(round(min(peak, 1.0) * width), width) - filled - 1
    if mark is not None and 0 <= mark < rest:
        bar.append(EMPTY * mark, style="dim")
        bar.append(PEAK, style="bold " + level_style(min(peak or 0.0, 1.0)))
        bar.append(EMPTY * (rest - mark - 1), style="dim")
    else:
        bar.append(EMPTY * rest, style="dim")
    return bar
