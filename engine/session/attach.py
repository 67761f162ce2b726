"""Following a run this process did not start (`osstune run --detach`, then `osstune attach`).

The engine is found through the output folder's lock (engine/session/lock.py): it is live while
the lock is held, its pid is recorded there, and its log is OUTPUT/engine.log. Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from osstune.engine.session.events import RunEnd, RunStart, read_typed
from osstune.engine.session.launch import ENGINE_LOG, LogTail
from osstune.engine.session.lock import owner_of

LOG_BACK_BYTES = 64 * 1024


class NotRunning(RuntimeError):
    """No live run owns the folder."""


class AttachedEngine:
    """The EngineProcess surface over a run owned by another process."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir)
        if owner_of(self.output_dir) is None:
            raise NotRunning(f"no live run in {self.output_dir} (nothing holds its lock)")
        self.log = LogTail(self.output_dir / ENGINE_LOG, back=LOG_BACK_BYTES)
        self._stop_sent = False
        self._exit: int | None = None

    def poll(self) -> int | None:
        """None while the engine holds the folder; then 0 unless its last attempt failed (the
        real exit code went to the process that started it)."""
        if self._exit is None and owner_of(self.output_dir) is None:
            events = read_typed(self.output_dir)
            starts = [i for i, e in enumerate(events) if isinstance(e, RunStart)]
            ends = [e for e in events[starts[-1] if starts else 0:] if isinstance(e, RunEnd)]
            self._exit = 0 if ends and ends[-1].status != "failed" else 1
        return self._exit

    def stderr_tail(self, n: int = 20) -> list[str]:
        return self.log.poll()[-n:]

    def _signal(self, signum: int) -> None:
        holder = owner_of(self.output_dir)  # read now: the engine records its own pid at start
        if holder is not None and holder.pid > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(holder.pid, signum)

    def stop(self) -> None:
        """SIGINT to the engine, once (a second one aborts it)."""
        if not self._stop_sent:
            self._stop_sent = True
            self._signal(signal.SIGINT)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
