"""A multi-row bar chart of the training loss over a bounded window of recent steps, with the
eval loss (validation split) as a second line of markers."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual.widget import Widget

from osstune.engine.session.fold import HISTORY_POINTS, EvalPoint, StepPoint

EIGHTHS = " ▁▂▃▄▅▆▇█"
EVAL_MARK = "●"
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


def eval_cells(steps: list[int], columns: int, points: Iterable[EvalPoint]
               ) -> dict[int, float]:
    """Column -> eval loss for the eval points inside the step window (the latest per column)."""
    cells: dict[int, float] = {}
    if not steps:
        return cells
    for p in points:
        if p.step < steps[0] or p.step > steps[-1]:
            continue
        index = min(bisect_left(steps, p.step), len(steps) - 1)
        cells[index * columns // len(steps) if len(steps) > columns else index] = p.loss
    return cells


def _runs(cells: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Adjacent cells of one style as one string (one span per run, not per cell)."""
    runs: list[tuple[str, str]] = []
    for text, style in cells:
        if runs and runs[-1][1] == style:
            runs[-1] = (runs[-1][0] + text, style)
        else:
            runs.append((text, style))
    return runs


class LossChart(Widget):
    """Feed it with `add_points` / `add_eval_points`; it keeps the last `maxlen` steps."""

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
        self.eval_history: deque[EvalPoint] = deque(maxlen=maxlen)

    def add_points(self, points: Iterable[StepPoint]) -> None:
        points = tuple(points)
        if points:
            self.history.extend(points)
            self.refresh()

    def add_eval_points(self, points: Iterable[EvalPoint]) -> None:
        points = tuple(points)
        if points:
            self.eval_history.extend(points)
            self.refresh()

    def clear(self) -> None:
        self.history.clear()
        self.eval_history.clear()
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        if not self.history:
            return Text("waiting for the first step…", style="dim")
        rows = max(height - 1, 1)
        plot_width = max(width - AXIS_WIDTH, 1)
        values = bucket_means([p.loss for p in self.history], plot_width)
        evals = eval_cells([p.step for p in self.history], len(values), self.eval_history)
        lo, hi = min([*values, *evals.values()]), max([*values, *evals.values()])
        span = (hi - lo) or max(abs(hi), 1.0) * 0.1

        def level(v: float) -> int:
            return round((v - lo) / span * (rows * 8 - 1)) + 1

        levels = [level(v) for v in values]
        eval_rows = {col: (level(v) + 7) // 8 for col, v in evals.items()}
        out = Text(no_wrap=True, overflow="crop")
        for row in range(rows, 0, -1):
            label = (
                _label(hi) if row == rows else _label(lo) if row == 1 else " " * (AXIS_WIDTH - 2)
            )
            out.append(label + " ┤" if row in (1, rows) else label + " │", style="dim")
            floor = (row - 1) * 8
            cells = [(EVAL_MARK, "bold magenta") if eval_rows.get(col) == row
                     else (EIGHTHS[min(max(lv - floor, 0), 8)], "cyan")
                     for col, lv in enumerate(levels)]
            for text, style in _runs(cells):
                out.append(text, style=style)
            out.append("\n")
        first, last = self.history[0].step, self.history[-1].step
        left = f"step {first}" + (f"  {EVAL_MARK} eval" if evals else "")
        right = f"{last}"
        gap = max(plot_width - len(left) - len(right), 1)
        out.append(" " * AXIS_WIDTH + left + " " * gap + right, style="dim")
        return out
