"""Events folded into what a front-end shows: one `RunFold`, read out as a frozen `RunSnapshot`.

The Rich panel of `osstune run` and the wizard's Training screen render only snapshots, so the
same events show the same numbers in both. Histories are bounded (memory stays flat on long runs).
Torch-free.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from osstune.engine.session.events import (
    AnyEvent,
    Checkpoint,
    ErrorEvent,
    Eval,
    RunEnd,
    RunStart,
    Step,
    WarningEvent,
)

HISTORY_POINTS = 2048  # loss/lr points kept for the chart; older ones fall off
NOTES_KEPT = 50


@dataclass(frozen=True)
class GpuMemory:
    """One rank's device memory; `reserved_gib` is None until the first step reports it."""

    rank: int
    name: str
    total_gib: float | None
    reserved_gib: float | None = None
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
    """What a front-end needs for one repaint; `new_points` are the steps since the last one."""

    status: str = "starting"
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    epoch: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    new_points: tuple[StepPoint, ...] = ()
    eval_loss: float | None = None  # the latest loss on the validation split
    new_eval_points: tuple[EvalPoint, ...] = ()
    gpus: tuple[GpuMemory, ...] = ()
    notes: tuple[str, ...] = ()
    log_lines: tuple[str, ...] = ()
    error: ErrorEvent | None = None
    end: RunEnd | None = None
    exit_code: int | None = None
    refusal: str | None = None  # the pre-flight said no; `forceable` when --force/f overrides it
    forceable: bool = False
    pack_len: str | None = None  # run_start: the packed row length and why

    @property
    def finished(self) -> bool:
        return self.exit_code is not None or self.refusal is not None


@dataclass
class RunFold:
    """Current figures plus bounded histories; `apply` takes typed events in file order."""

    history: int = HISTORY_POINTS
    expected_gpus: tuple[GpuMemory, ...] = ()  # from the config, before the engine says more
    status: str = "starting"
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    epoch: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    error: ErrorEvent | None = None
    end: RunEnd | None = None
    eval_loss: float | None = None
    pack_len: str | None = None
    events_seen: int = 0
    gpus: dict[int, GpuMemory] = field(default_factory=dict)
    new_points: deque[StepPoint] = field(init=False)
    new_eval_points: deque[EvalPoint] = field(init=False)
    notes: deque[str] = field(init=False)

    def __post_init__(self) -> None:
        self.new_points = deque(maxlen=self.history)
        self.new_eval_points = deque(maxlen=self.history)
        self.notes = deque(maxlen=NOTES_KEPT)
        self.gpus = {g.rank: g for g in self.expected_gpus}

    def apply(self, events: Iterable[AnyEvent]) -> None:
        for event in events:
            self.events_seen += 1
            if isinstance(event, RunStart):
                self._on_run_start(event)
            elif isinstance(event, Step):
                self._on_step(event)
            elif isinstance(event, Eval):
                self.eval_loss = event.loss
                self.new_eval_points.append(EvalPoint(event.step, event.loss))
            elif isinstance(event, Checkpoint):
                self.notes.append(f"checkpoint at step {event.step}: {event.path}")
            elif isinstance(event, WarningEvent):
                self.notes.append(f"warning: {event.message}")
            elif isinstance(event, ErrorEvent):
                self.error = event
                self.notes.append(f"error ({event.kind}): {event.message}")
            elif isinstance(event, RunEnd):
                self.end, self.status = event, event.status
                self.notes.append(f"run {event.status}")

    def _on_run_start(self, event: RunStart) -> None:
        self.error = self.end = None  # a resumed run starts again after an earlier end
        self.status = "training"
        self.total_steps, self.step = event.total_steps, event.start_step
        self.pack_len = (event.pack_len or {}).get("detail")
        for gpu in event.gpus:
            known = self.gpus.get(gpu.rank)
            self.gpus[gpu.rank] = GpuMemory(
                gpu.rank, gpu.name, gpu.memory_total_gib,
                known.reserved_gib if known else None, known.peak_gib if known else 0.0)

    def _on_step(self, event: Step) -> None:
        self.step, self.total_steps = event.step, event.total_steps
        self.loss, self.lr, self.epoch = event.loss, event.lr, event.epoch
        self.tokens_per_s, self.elapsed_s, self.eta_s = (event.tokens_per_s, event.elapsed_s,
                                                         event.eta_s)
        self.new_points.append(StepPoint(event.step, event.loss, event.lr))
        for gpu in event.gpus:
            known = self.gpus.get(gpu.rank) or GpuMemory(gpu.rank, "", None)
            reserved = gpu.device_mem_reserved_gib
            self.gpus[gpu.rank] = GpuMemory(gpu.rank, known.name, known.total_gib, reserved,
                                            max(known.peak_gib, reserved))

    def snapshot(self, **extra: object) -> RunSnapshot:
        """Current figures; drains the step points gathered since the previous snapshot."""
        points, eval_points = tuple(self.new_points), tuple(self.new_eval_points)
        self.new_points.clear()
        self.new_eval_points.clear()
        fields: dict[str, object] = {"status": self.status, **extra}
        return RunSnapshot(
            step=self.step, total_steps=self.total_steps, loss=self.loss,
            lr=self.lr, epoch=self.epoch, tokens_per_s=self.tokens_per_s,
            elapsed_s=self.elapsed_s, eta_s=self.eta_s, new_points=points,
            eval_loss=self.eval_loss, new_eval_points=eval_points,
            gpus=tuple(self.gpus[r] for r in sorted(self.gpus)), notes=tuple(self.notes),
            error=self.error, end=self.end, pack_len=self.pack_len, **fields)  # type: ignore[arg-type]
