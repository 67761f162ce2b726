"""Where the training screen gets its figures.

A `RunSource` is the engine run as the wizard sees it: new events from `OUTPUT/events.jsonl`, the
tail of the engine's stderr, the exit code, and Stop / Kill. The app is *given* a launcher that
makes one (tests hand it the real tiny-CPU run or a fake), so no screen spawns processes itself.

`RunMonitor` folds events into a `RunState` of bounded histories on a worker thread and hands the
UI thread a `RunSnapshot`; `RunProgress` messages coalesce, so a burst of steps costs one repaint.
No torch here: the engine runs in its own process.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from textual.message import Message

from osstune.engine.session.events import EVENTS_FILE, EventReader

if TYPE_CHECKING:
    from osstune.engine.plan.config import RunConfig

HISTORY_POINTS = 2048  # loss/lr points kept for the chart; older ones fall off (flat memory)
LOG_LINES = 200
NOTES_KEPT = 50


class RunSource(Protocol):
    output_dir: Path

    def poll_events(self) -> list[dict[str, Any]]: ...

    def log_tail(self, n: int) -> list[str]: ...

    def exit_code(self) -> int | None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


# (config, resume, force) -> a started run; the output directory is config.output.dir.
RunLauncher = Callable[["RunConfig", bool, bool], RunSource]


class ProcessLike(Protocol):
    """What `osstune.engine.session.launch.TrainingProcess` offers once started."""

    def poll(self) -> int | None: ...

    def stderr_tail(self, n: int = ...) -> Any: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


class ProcessRunSource:
    """A `RunSource` over a started engine process and its events file."""

    def __init__(
        self, process: ProcessLike, output_dir: str | Path, events: EventReader | None = None
    ):
        self.process = process
        self.output_dir = Path(output_dir)
        self.events = events if events is not None else EventReader(self.output_dir / EVENTS_FILE)

    @classmethod
    def launch(cls, cfg: RunConfig, resume: bool = False, force: bool = False) -> ProcessRunSource:
        """Start the engine through the same launcher as `osstune run`."""
        from osstune.engine.session.launch import TrainingProcess

        # Read from the start on resume (the chart continues the earlier curve); a forced fresh
        # start skips what an earlier run left (a replaced or truncated file is re-read anyway).
        events = EventReader(Path(cfg.output.dir) / EVENTS_FILE)
        if force and not resume:
            events.poll()
        process = TrainingProcess()
        process.start(cfg, cfg.output.dir, resume=resume, force=force)
        return cls(process, cfg.output.dir, events)

    def poll_events(self) -> list[dict[str, Any]]:
        return self.events.poll()

    def log_tail(self, n: int) -> list[str]:
        tail = self.process.stderr_tail(n)
        lines = tail.splitlines() if isinstance(tail, str) else [str(line) for line in tail]
        return lines[-n:]

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()


@dataclass(frozen=True)
class GpuMemory:
    rank: int
    name: str
    total_gib: float | None
    reserved_gib: float = 0.0
    peak_gib: float = 0.0


@dataclass(frozen=True)
class StepPoint:
    step: int
    loss: float
    lr: float


@dataclass(frozen=True)
class EvalPoint:
    step: int
    loss: float


@dataclass(frozen=True)
class RunSnapshot:
    """What the UI thread needs for one repaint; `new_points` are the steps since the last one."""

    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    epoch: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    new_points: tuple[StepPoint, ...] = ()
    eval_loss: float | None = None
    new_eval_points: tuple[EvalPoint, ...] = ()
    gpus: tuple[GpuMemory, ...] = ()
    notes: tuple[str, ...] = ()
    log_lines: tuple[str, ...] = ()
    error: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.exit_code is not None


@dataclass
class RunState:
    """Events folded into current figures plus bounded histories (memory stays flat)."""

    history: int = HISTORY_POINTS
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    epoch: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    error: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    events_seen: int = 0
    gpus: dict[int, GpuMemory] = field(default_factory=dict)
    new_points: deque[StepPoint] = field(init=False)
    eval_loss: float | None = None
    new_eval_points: deque[EvalPoint] = field(init=False)
    notes: deque[str] = field(init=False)

    def __post_init__(self) -> None:
        self.new_points = deque(maxlen=self.history)
        self.new_eval_points = deque(maxlen=self.history)
        self.notes = deque(maxlen=NOTES_KEPT)

    def apply(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            self.events_seen += 1
            handler = getattr(self, f"_on_{event['type']}", None)
            if handler is not None:
                handler(event)

    def _on_run_start(self, event: dict[str, Any]) -> None:
        self.error = self.end = None  # a resumed run starts again after an earlier end
        self.total_steps = event["total_steps"]
        for gpu in event["gpus"]:
            if isinstance(gpu, dict) and isinstance(gpu.get("rank"), int):
                total = gpu.get("memory_total_gib")
                self.gpus[gpu["rank"]] = GpuMemory(
                    rank=gpu["rank"],
                    name=str(gpu.get("name", "")),
                    total_gib=float(total) if isinstance(total, (int, float)) else None,
                )

    def _on_step(self, event: dict[str, Any]) -> None:
        self.step, self.total_steps = event["step"], event["total_steps"]
        self.loss, self.lr, self.epoch = float(event["loss"]), float(event["lr"]), event["epoch"]
        self.tokens_per_s, self.elapsed_s, self.eta_s = (
            event["tokens_per_s"],
            event["elapsed_s"],
            event["eta_s"],
        )
        self.new_points.append(StepPoint(self.step, self.loss, self.lr))
        for gpu in event["gpus"]:
            rank = int(gpu["rank"])
            known = self.gpus.get(rank) or GpuMemory(rank=rank, name="", total_gib=None)
            reserved = float(gpu["device_mem_reserved_gib"])
            self.gpus[rank] = GpuMemory(
                rank, known.name, known.total_gib, reserved, max(known.peak_gib, reserved)
            )

    def _on_eval(self, event: dict[str, Any]) -> None:
        self.eval_loss = float(event["loss"])
        self.new_eval_points.append(EvalPoint(event["step"], self.eval_loss))

    def _on_checkpoint(self, event: dict[str, Any]) -> None:
        self.notes.append(f"checkpoint at step {event['step']}: {event['path']}")

    def _on_warning(self, event: dict[str, Any]) -> None:
        self.notes.append(f"warning: {event['message']}")

    def _on_error(self, event: dict[str, Any]) -> None:
        self.error = {k: event[k] for k in ("kind", "message", "hint")}
        self.notes.append(f"error ({event['kind']}): {event['message']}")

    def _on_run_end(self, event: dict[str, Any]) -> None:
        self.end = {"status": event["status"], "outputs": dict(event["outputs"])}
        self.notes.append(f"run {event['status']}")


class RunProgress(Message):
    """New figures are waiting. Queued ones collapse into one: the handler reads a snapshot."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunProgress)


class RunMonitor:
    """Reads a source on a worker thread (`pump`) and hands snapshots to the UI thread."""

    def __init__(
        self, source: RunSource, history: int = HISTORY_POINTS, log_lines: int = LOG_LINES
    ):
        self.source = source
        self.state = RunState(history=history)
        self._log_lines = log_lines
        self._log: tuple[str, ...] = ()
        self._exit_code: int | None = None
        self._lock = threading.Lock()

    def pump(self) -> bool:
        """Read whatever is new; True when the UI has something to show. Worker thread only."""
        exit_code = self.source.exit_code()  # read first: events written before exit are then seen
        events = self.source.poll_events()
        log = tuple(self.source.log_tail(self._log_lines))
        with self._lock:
            changed = bool(events) or log != self._log or exit_code != self._exit_code
            self.state.apply(events)
            self._log, self._exit_code = log, exit_code
        return changed

    @property
    def finished(self) -> bool:
        return self._exit_code is not None

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    def snapshot(self) -> RunSnapshot:
        """Current figures; drains the step points gathered since the previous snapshot."""
        with self._lock:
            s = self.state
            points, eval_points = tuple(s.new_points), tuple(s.new_eval_points)
            s.new_points.clear()
            s.new_eval_points.clear()
            return RunSnapshot(
                step=s.step,
                total_steps=s.total_steps,
                loss=s.loss,
                lr=s.lr,
                epoch=s.epoch,
                tokens_per_s=s.tokens_per_s,
                elapsed_s=s.elapsed_s,
                eta_s=s.eta_s,
                new_points=points,
                eval_loss=s.eval_loss,
                new_eval_points=eval_points,
                gpus=tuple(s.gpus[r] for r in sorted(s.gpus)),
                notes=tuple(s.notes),
                log_lines=self._log,
                error=s.error,
                end=s.end,
                exit_code=self._exit_code,
            )
