"""Console output shared by the CLI commands: one place decides styling, JSON and errors.

Rules every command follows by using these helpers:
- Styled (Rich) output only when stdout is a terminal; piped or redirected output is plain text
  with no colour codes and no box drawing, so it can be grepped.
- `NO_COLOR` (any non-empty value, https://no-color.org) turns colour off on a terminal too.
- `print_json` writes machine-readable output to stdout, never styled.
- `fail` writes `osstune: error: MESSAGE` to stderr and exits non-zero without a traceback:
  exit code 2 (EXIT_USAGE) for bad input (a missing file, an unknown preset), 1 (EXIT_PROBLEM) when
  the command ran and found a problem.

Imports only typer/rich, which the CLI loads anyway, and the engine's tiny `units` helpers
(`fmt_gib` for every size, `plural` for every count).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

import typer

from osstune.engine.plan.units import fmt_gib, plural  # noqa: F401 - the helpers, re-exported

EXIT_PROBLEM = 1
EXIT_USAGE = 2

# A table cell: plain text, or (text, rich style) - the style is dropped in plain output.
Cell = str | tuple[str, str]


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


def use_color(stream: TextIO | None = None) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def console(stderr: bool = False):  # noqa: ANN201 - rich.console.Console, imported lazily
    """A Rich console for the terminal; colour follows `use_color`."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, no_color=not use_color(stream), highlight=False)


# Characters a terminal would act on rather than show: C0 controls other than newline and tab,
# DEL, C1 controls, and the bidirectional overrides/isolates ("Trojan Source") - shown escaped.
_UNSAFE = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]
           if c not in (0x09, 0x0A)}
_UNSAFE.update({c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]})
_UNSAFE_ONE_LINE = {**_UNSAFE, 0x09: "\\t", 0x0A: "\\n"}


def safe_text(text: str, one_line: bool = False) -> str:
    """`text` with terminal control characters escaped visibly (ESC -> \\x1b, NUL -> \\x00);
    one_line also escapes newline and tab, so a message stays on one line."""
    return text.translate(_UNSAFE_ONE_LINE if one_line else _UNSAFE)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print a one-line error to stderr and exit with `code` (no traceback)."""
    typer.echo(f"osstune: error: {safe_text(message)}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    typer.echo(f"osstune: warning: {safe_text(message)}", err=True)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _text(cell: Cell) -> str:
    """A cell's text with terminal control characters escaped (names may come from files)."""
    return safe_text(cell if isinstance(cell, str) else cell[0])


def plain_table(columns: Sequence[str] | None, rows: Sequence[Sequence[Cell]]) -> str:
    """Columns aligned with spaces; a cell may hold several lines (continued below itself)."""
    grid = [list(columns)] if columns else []
    grid += [[_text(c) for c in row] for row in rows]
    if not grid:
        return ""
    widths = [max(len(line) for r in grid for line in r[i].splitlines() or [""])
              for i in range(len(grid[0]))]
    out = []
    for r in grid:
        cells = [c.splitlines() or [""] for c in r]
        for k in range(max(len(c) for c in cells)):
            parts = [(c[k] if k < len(c) else "").ljust(w)
                     for c, w in zip(cells, widths, strict=True)]
            out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def print_table(columns: Sequence[str] | None, rows: Sequence[Sequence[Cell]],
                title: str | None = None, lines: bool = False) -> None:
    """A Rich table on a terminal, `plain_table` text otherwise.

    columns=None: no header row. lines: rules between rows (for multi-line cells), terminal only.
    """
    if not is_terminal():
        if title:
            typer.echo(title)
        typer.echo(plain_table(columns, rows))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_header=columns is not None, title_justify="left",
                  show_lines=lines)
    for name in columns or [""] * (len(rows[0]) if rows else 0):
        table.add_column(name)
    for row in rows:
        table.add_row(*(Text(_text(c), style="" if isinstance(c, str) else c[1]) for c in row))
    console().print(table)


def print_line(text: Cell = "") -> None:
    """One line of prose; styled on a terminal."""
    if not is_terminal() or isinstance(text, str):
        typer.echo(_text(text))
        return
    from rich.text import Text

    console().print(Text(_text(text), style=text[1]))
