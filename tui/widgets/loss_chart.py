"""The Training screen's loss chart: a bounded window of recent steps and eval points, drawn by
tui/render/chart.py to whatever size the widget has."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual.widget import Widget

from osstune.engine.session.fold import HISTORY_POINTS, EvalPoint, StepPoint
from osstune.tui.render.chart import EVAL_MARK, loss_chart

__all__ = ["EVAL_MARK", "LossChart"]


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
        size = self.content_size
        return loss_chart(self.history, self.eval_history, size.width, size.height)
