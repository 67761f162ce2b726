"""A multi-row bar chart of the training loss over a bounded window of recent steps."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual.widget import Widget

from osstune.engine.session.fold import HISTORY_POINTS, StepPoint

EIGHTHS = " ▁▂▃▄▅▆▇█"
AXIS_WIDTH = 8  # "12.345 ┤"


def bucket_means(values: list[float], columns: int) -> list[float]:
    """Average `values` into at most `columns` buckets, oldest first."""
    if len(values) <= columns:
        return list(values)
    means = []
    for c in range(columns):
        lo, hi = c * len(values) // columns, (c + 1) * len(values) // columns
        chunk = values[lo:hi]
        means.append(sum(chunk) / len(chunk))
    return means


def _label(value: float) -> str:
    return f"{value:.3g}"[: AXIS_WIDTH - 2].rjust(AXIS_WIDTH - 2)


class LossChart(Widget):
    """Feed it with `add_points`; it keeps the last `maxlen` steps and repaints only when told."""

    DEFAULT_CSS = """
    LossChart { height: 10; text-wrap: nowrap; text-overflow: clip; }
    """

    def __init__(
        self,
        maxlen: int = HISTORY_POINTS,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.history: deque[StepPoint] = deque(maxlen=maxlen)

    def add_points(self, points: Iterable[StepPoint]) -> None:
        points = tuple(points)
        if points:
            self.history.extend(points)
            self.refresh()

    def clear(self) -> None:
        self.history.clear()
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        if not self.history:
            return Text("waiting for the first step…", style="dim")
        rows = max(height - 1, 1)
        plot_width = max(width - AXIS_WIDTH, 1)
        values = bucket_means([p.loss for p in self.history], plot_width)
        lo, hi = min(values), max(values)
        span = (hi - lo) or max(abs(hi), 1.0) * 0.1
        levels = [round((v - lo) / span * (rows * 8 - 1)) + 1 for v in values]
        out = Text(no_wrap=True, overflow="crop")
        for row in range(rows, 0, -1):
            label = (
                _label(hi) if row == rows else _label(lo) if row == 1 else " " * (AXIS_WIDTH - 2)
            )
            out.append(label + " ┤" if row in (1, rows) else label + " │", style="dim")
            floor = (row - 1) * 8
            cells = "".join(EIGHTHS[min(max(level - floor, 0), 8)] for level in levels)
            out.append(cells, style="cyan")
            out.append("\n")
        first, last = self.history[0].step, self.history[-1].step
        left, right = f"step {first}", f"{last}"
        gap = max(plot_width - len(left) - len(right), 1)
        out.append(" " * AXIS_WIDTH + left + " " * gap + right, style="dim")
        return out
