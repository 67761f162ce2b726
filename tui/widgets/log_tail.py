"""The last lines of the engine's stderr, shown as plain text (no markup is interpreted)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual.widget import Widget

TAIL_LINES = 200


class LogTail(Widget):
    DEFAULT_CSS = """
    LogTail { height: 6; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(
        self,
        maxlen: int = TAIL_LINES,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.lines: deque[str] = deque(maxlen=maxlen)

    def set_lines(self, lines: Iterable[str]) -> None:
        lines = list(lines)
        if lines != list(self.lines):
            self.lines.clear()
            self.lines.extend(lines)
            self.refresh()

    def render(self) -> Text:
        if not self.lines:
            return Text("(no output yet)", style="dim")
        shown = list(self.lines)[-max(self.content_size.height, 1) :]
        return Text("\n".join(shown), no_wrap=True, overflow="ellipsis")
