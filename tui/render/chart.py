"""The loss chart as text: training loss as bars spread over the whole plot width (a few steps are
stretched, many are averaged), the eval loss as a second series of markers in its step's column,
the y range at the left and step ticks under the plot.

Pure functions of the points and the size, so the Training screen's `LossChart` and tests draw the
same thing.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from rich.text import Text

from osstune.engine.session.fold import EvalPoint, StepPoint

EIGHTHS = " ▁▂▃▄▅▆▇█"
EVAL_MARK = "●"
AXIS_WIDTH = 8  # "12.345 ┤"
LOSS_STYLE, EVAL_STYLE = "cyan", "bold magenta"


def column_span(column: int, points: int, columns: int) -> tuple[int, int]:
    """[lo, hi) of the points that `column` shows: a bucket of them when there are more points
    than columns, otherwise the one point whose share of the width holds the column."""
    lo = column * points // columns
    return lo, max((column + 1) * points // columns, lo + 1)


def column_means(values: Sequence[float], columns: int) -> list[float]:
    """One value per column (`columns` of them), oldest first; empty without values."""
    if not values:
        return []
    means = []
    for c in range(columns):
        lo, hi = column_span(c, len(values), columns)
        means.append(sum(values[lo:hi]) / (hi - lo))
    return means


def column_of(index: int, points: int, columns: int) -> int:
    """The column that shows point `index`: the middle of its share when it has several."""
    first = (index * columns + points - 1) // points
    last = ((index + 1) * columns - 1) // points
    return (first + last) // 2 if first <= last else last


def eval_cells(steps: Sequence[int], columns: int, points: Iterable[EvalPoint]
               ) -> dict[int, float]:
    """Column -> eval loss for the eval points inside the step window (the latest per column)."""
    cells: dict[int, float] = {}
    if not steps:
        return cells
    for p in points:
        if steps[0] <= p.step <= steps[-1]:
            index = min(bisect_left(steps, p.step), len(steps) - 1)
            cells[column_of(index, len(steps), columns)] = p.loss
    return cells


def _label(value: float) -> str:
    return f"{value:.3g}"[: AXIS_WIDTH - 2].rjust(AXIS_WIDTH - 2)


def _runs(cells: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Adjacent cells of one style as one string (one span per run, not per cell)."""
    runs: list[tuple[str, str]] = []
    for text, style in cells:
        if runs and runs[-1][1] == style:
            runs[-1] = (runs[-1][0] + text, style)
        else:
            runs.append((text, style))
    return runs


def step_axis(steps: Sequence[int], columns: int, with_eval: bool) -> str:
    """Under the plot: the first step at the left edge, the last at the right edge, the middle
    one under the middle column when there is room."""
    first, last = f"step {steps[0]}", str(steps[-1])
    left = first + (f"  {EVAL_MARK} eval" if with_eval else "")
    line = [" "] * max(columns, len(left) + 1 + len(last))
    line[: len(left)] = left
    line[len(line) - len(last):] = last
    if len(steps) > 2:
        middle = columns // 2
        label = str(steps[column_span(middle, len(steps), columns)[0]])
        at = middle - len(label) // 2
        if at >= len(left) + 2 and at + len(label) + 2 <= len(line) - len(last):
            line[at: at + len(label)] = label
    return "".join(line)


def loss_chart(history: Sequence[StepPoint], evals: Iterable[EvalPoint], width: int,
               height: int) -> Text:
    """The chart for a `width` x `height` area (the last line is the step axis)."""
    if not history:
        return Text("waiting for the first step…", style="dim")
    rows = max(height - 1, 1)
    plot_width = max(width - AXIS_WIDTH, 1)
    steps = [p.step for p in history]
    values = column_means([p.loss for p in history], plot_width)
    eval_at = eval_cells(steps, plot_width, evals)
    lo, hi = min([*values, *eval_at.values()]), max([*values, *eval_at.values()])
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1

    def level(v: float) -> int:
        return round((v - lo) / span * (rows * 8 - 1)) + 1

    levels = [level(v) for v in values]
    eval_rows = {col: (level(v) + 7) // 8 for col, v in eval_at.items()}
    out = Text(no_wrap=True, overflow="crop")
    for row in range(rows, 0, -1):
        label = _label(hi) if row == rows else _label(lo) if row == 1 else " " * (AXIS_WIDTH - 2)
        out.append(label + (" ┤" if row in (1, rows) else " │"), style="dim")
        floor = (row - 1) * 8
        cells = [(EVAL_MARK, EVAL_STYLE) if eval_rows.get(col) == row
                 else (EIGHTHS[min(max(lv - floor, 0), 8)], LOSS_STYLE)
                 for col, lv in enumerate(levels)]
        for text, style in _runs(cells):
            out.append(text, style=style)
        out.append("\n")
    out.append(" " * AXIS_WIDTH + step_axis(steps, plot_width, bool(eval_at)), style="dim")
    return out
