"""A program on a real pseudo-terminal, and what a terminal would show of its output.

`Screen` replays the bytes a program wrote the way a VT100-style terminal does for the codes
Rich's Live display uses (carriage return, newline, cursor up, erase line, colours ignored),
including the pending wrap at the last column: so a test can assert on the final screen, e.g.
that a live panel left no copy of its lines behind.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time
from collections.abc import Callable


class Screen:
    """`rows` x `columns`, its cursor on the last line (a shell's prompt at the bottom of a
    full terminal): a line fed past the bottom scrolls the top line into the scrollback, where
    the cursor cannot go back up to erase it."""

    def __init__(self, columns: int, rows: int) -> None:
        self.columns, self.rows = columns, rows
        self.lines: list[list[str]] = [list("$") for _ in range(rows - 1)] + [[]]
        self.history = rows - 1  # lines before the program's output
        self.row, self.col, self.top = rows - 1, 0, 0
        self.wrap_pending = self.escape = False
        self.csi: str | None = None

    def _put(self, ch: str) -> None:
        if self.wrap_pending:
            self._newline()
            self.col = 0
        line = self.lines[self.row]
        line.extend(" " * (self.col - len(line) + 1))
        line[self.col] = ch
        if self.col == self.columns - 1:
            self.wrap_pending = True
        else:
            self.col += 1

    def _newline(self) -> None:
        self.wrap_pending = False
        self.row += 1
        if self.row == len(self.lines):
            self.lines.append([])
        if self.row - self.top >= self.rows:
            self.top += 1

    def _control(self, params: str, final: str) -> None:
        n = int(params) if params.isdigit() else None
        if final == "A":
            self.row, self.wrap_pending = max(self.row - (n or 1), self.top), False
        elif final == "K":
            line = self.lines[self.row]
            if n == 2:
                line.clear()
            else:  # to the end of the line
                del line[self.col:]
        elif final == "G":
            self.col, self.wrap_pending = (n or 1) - 1, False
        # colours (m), cursor shown/hidden (h/l): nothing to place on the screen

    def feed(self, data: bytes) -> None:
        """Bytes as a terminal parses them: ESC [ parameters final-byte is one control sequence
        (whatever is echoed into the middle of one becomes part of it, as on a real terminal)."""
        for ch in data.decode("utf-8", "replace"):
            if self.csi is not None:
                if "\x20" <= ch <= "\x3f":
                    self.csi += ch
                else:  # the final byte (0x40-0x7e), or anything else ends it
                    self._control(self.csi, ch)
                    self.csi = None
            elif self.escape:
                self.escape = False
                self.csi = "" if ch == "[" else None
            elif ch == "\x1b":
                self.escape = True
            elif ch == "\r":
                self.col, self.wrap_pending = 0, False
            elif ch == "\n":
                self._newline()
            elif ch >= " ":
                self._put(ch)

    def earlier_lines_kept(self) -> bool:
        """Nothing of what was on the terminal before the program was erased or overwritten."""
        return all(line == ["$"] for line in self.lines[:self.history])

    def text(self) -> list[str]:
        """What the program left: the scrollback and the screen, without the earlier lines."""
        return ["".join(line).rstrip() for line in self.lines[self.history:]]


def spawn_on_pty(argv: list[str], env: dict[str, str], cwd: str, columns: int = 100,
                 rows: int = 40) -> tuple[int, int]:
    """(pid, master fd): `argv` as the session leader of a new terminal of that size."""
    pid, fd = os.forkpty()
    if pid == 0:  # the child: its controlling terminal is the pty
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    return pid, fd


def read_until(fd: int, seen: bytearray, done: Callable[[], bool], timeout: float) -> bool:
    """Read the pty into `seen` until `done()` or the timeout; False when the pty closed."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            seen += chunk
    return True
