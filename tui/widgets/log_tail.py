"""The engine's stderr, scrollable: new lines follow at the bottom unless the user has scrolled up
to read (arrows, page keys, the mouse wheel); plain text, no markup or control codes interpreted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from textual.widgets import Log

TAIL_LINES = 200


def new_part(shown: Sequence[str], window: Sequence[str]) -> int | None:
    """How many leading lines of `window` (the latest lines) `shown` already ends with; None
    when they do not overlap at all (a new run: start again)."""
    if not shown:
        return 0
    for k in range(min(len(shown), len(window)), 0, -1):
        if list(shown[-k:]) == list(window[:k]):
            return k
    return None


class LogTail(Log):
    DEFAULT_CSS = """
    LogTail { height: 8; overflow: auto auto; }
    """

    def __init__(
        self,
        maxlen: int = TAIL_LINES,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(max_lines=maxlen, name=name, id=id, classes=classes)
        self._window: list[str] = []
        self.following = True  # at the bottom: new lines scroll into view

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.following = new_value >= self.max_scroll_y  # scrolled up: stay where the user is

    def on_resize(self) -> None:
        if self.following:  # a shorter pane (a note appeared): keep the last line in view
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)

    def set_lines(self, lines: Iterable[str]) -> None:
        """Show the latest `lines` (a sliding window): only what is new is appended."""
        window = list(lines)
        if window == self._window:
            return
        known = new_part(self._window, window)
        if known is None:
            self.clear()
            known = 0
        self._window = window
        before, added = len(self.lines), window[known:]
        self.write_lines(added, scroll_end=False)
        dropped = before + len(added) - len(self.lines)  # the oldest lines beyond max_lines
        if dropped > 0 and not self.following:  # keep the lines being read where they are
            self.scroll_to(y=max(self.scroll_y - dropped, 0), animate=False, immediate=True)
        if self.following:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)
