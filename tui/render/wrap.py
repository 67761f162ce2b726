"""Line wrapping that keeps units whole: words first, then given boundaries (token starts), and
only a unit longer than a whole line is cut inside. Rich wraps only at whitespace, so a run of
tokens without spaces (`level?<|end|><|start|>assistant`) would be cut mid-token.

`SoftWrap` is a Rich renderable: it wraps to the width it is given when drawn, so a Textual pane
rewraps on resize. `hang=True` indents continuation lines under their source line (+2), which
keeps YAML readable: a wrapped value never looks like a key of its own.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.cells import get_character_cell_size

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.text import Text


def _indent(text: str, line_start: int, width: int, hang: bool) -> int:
    if not hang:
        return 0
    spaces = len(text[line_start:]) - len(text[line_start:].lstrip(" "))
    return min(spaces + 2, width // 2)


def _fits_a_line(text: str, start: int, full: int) -> bool:
    """Whether the word at `start` is at most `full` characters (looks no further than that)."""
    end = start
    while end < len(text) and not text[end].isspace():
        end += 1
        if end - start > full:
            return False
    return True


def _cut(text: str, start: int, pos: int, full: int, boundaries: Sequence[int]) -> int:
    """Where to break a line that runs from `start` and overflows at `pos` (> start)."""
    if text[pos].isspace():  # the overflowing cell is a space: the whole word fits
        return pos + 1
    after_space = next((i for i in range(pos, start, -1) if text[i - 1].isspace()), None)
    k = bisect_right(boundaries, pos) - 1
    at_boundary = boundaries[k] if k >= 0 and boundaries[k] > start else None
    if after_space is not None:  # a word break, unless the word is too long for any line
        boundary_after_it = at_boundary is not None and at_boundary > after_space
        if not boundary_after_it or _fits_a_line(text, after_space, full):
            return after_space
    if at_boundary is not None:
        return at_boundary
    return pos


def break_points(text: str, width: int, boundaries: Sequence[int] = (), hang: bool = False
                 ) -> list[tuple[int, int]]:
    """(offset, indent of the continuation) for each break that makes `text` fit `width` cells.

    Newlines in `text` end lines themselves. `boundaries` are sorted offsets where a break is
    allowed inside a word (token starts)."""
    width = max(width, 1)
    breaks: list[tuple[int, int]] = []
    start, line_start, indent = 0, 0, 0
    while start < len(text):
        limit = max(width - indent, 1)
        pos, cells = start, 0
        while pos < len(text) and text[pos] != "\n":
            size = get_character_cell_size(text[pos])
            if cells + size > limit and pos > start:
                break
            cells, pos = cells + size, pos + 1
        if pos >= len(text):
            break
        if text[pos] == "\n":
            start = line_start = pos + 1
            indent = 0
            continue
        indent = _indent(text, line_start, width, hang)
        start = _cut(text, start, pos, max(width - indent, 1), boundaries)
        if start >= len(text) or text[start] == "\n":
            continue
        breaks.append((start, indent))
    return breaks


def wrap_text(text: Text, width: int, boundaries: Sequence[int] = (), hang: bool = False
              ) -> Text:
    """`text` with line breaks inserted (styles kept); every line fits `width` cells."""
    from rich.text import Text

    breaks = break_points(text.plain, width, boundaries, hang)
    if not breaks:
        return text.copy()
    pieces = text.divide(offset for offset, _ in breaks)
    out = Text(no_wrap=True, overflow="crop")
    out.append_text(pieces[0])
    for piece, (_, indent) in zip(pieces[1:], breaks, strict=True):
        out.rstrip()
        out.append("\n" + " " * indent)
        out.append_text(piece)
    return out


class SoftWrap:
    """A Rich renderable: `text` wrapped (see `wrap_text`) to the width it is drawn at."""

    def __init__(self, text: Text, boundaries: Sequence[int] = (), hang: bool = False) -> None:
        self.text = text
        self.boundaries = sorted(boundaries)
        self.hang = hang

    def __str__(self) -> str:
        return self.text.plain

    def lines(self, width: int) -> list[str]:
        """The plain lines as drawn at `width` (what tests compare against the source)."""
        return wrap_text(self.text, width, self.boundaries, self.hang).plain.split("\n")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield wrap_text(self.text, options.max_width, self.boundaries, self.hang)
