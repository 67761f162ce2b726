"""Events folded into what a front-end shows: one `RunFold`, read out as a frozen `RunSnapshot`.

The Rich panel of `osstune run` and the wizard's Training screen render only snapshots, so the
same events show the same numbers in both. Histories are bounded (memory stays flat on long runs).
Torch-free.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

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


def error_note(event: ErrorEvent) -> str:
    return f"error ({event.kind}): {event.message}"


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
class RunFigures:
    """A run's latest figures as its events left them (the fold keeps one, snapshots extend it)."""

    status: str = "starting"
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    epoch: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    eval_loss: float | None = None  # the latest loss on the validation split
    error: ErrorEvent | None = None
    end: RunEnd | None = None
    dataset: dict[str, Any] | None = None  # run_start's dataset statistics (rows skipped, ...)
    pack_len: str | None = None  # run_start: the packed row length and why


@dataclass(frozen=True)
class RunSnapshot(RunFigures):
    """What a front-end needs for one repaint; `new_points` are the steps since the last one."""

    new_points: tuple[StepPoint, ...] = ()
    new_eval_points: tuple[EvalPoint, ...] = ()
    gpus: tuple[GpuMemory, ...] = ()
    notes: tuple[str, ...] = ()
    log_lines: tuple[str, ...] = ()
    exit_code: int | None = None
    refusal: str | None = None  # the pre-flight said no; `forceable` when --force/f overrides it
    forceable: bool = False

    @property
    def finished(self) -> bool:
        return self.exit_code is not None or self.refusal is not None


_FIGURES = tuple(f.name for f in fields(RunFigures))


@dataclass
class RunFold:
    """Current figures plus bounded histories; `apply` takes typed events in file order.

    The figures read as the fold's own attributes too (`fold.step`, `fold.status`).
    """

    history: int = HISTORY_POINTS
    expected_gpus: tuple[GpuMemory, ...] = ()  # from the config, before the engine says more
    figures: RunFigures = field(default_factory=RunFigures)
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

    def __getattr__(self, name: str) -> object:
        figures = self.__dict__.get("figures")  # only called when normal lookup fails
        if name in _FIGURES and figures is not None:
            return getattr(figures, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _set(self, **changes: object) -> None:
        self.figures = replace(self.figures, **changes)  # type: ignore[arg-type]

    def apply(self, events: Iterable[AnyEvent]) -> None:
        for event in events:
            self.events_seen += 1
            if isinstance(event, RunStart):
                self._on_run_start(event)
            elif isinstance(event, Step):
                self._on_step(event)
            elif isinstance(event, Eval):
                self._set(eval_loss=event.loss)
                self.new_eval_points.append(EvalPoint(event.step, event.loss))
            elif isinstance(event, Checkpoint):
                self.notes.append(f"checkpoint at step {event.step}: {event.path}")
            elif isinstance(event, WarningEvent):
                self.notes.append(f"warning: {event.message}")
            elif isinstance(event, ErrorEvent):
                self._set(error=event)
                self.notes.append(error_note(event))
            elif isinstance(event, RunEnd):
                self._set(end=event, status=event.status)
                self.notes.append(f"run {event.status}")

    def _on_run_start(self, event: RunStart) -> None:
        # a resumed run starts again after an earlier end
        self._set(error=None, end=None, status="training", total_steps=event.total_steps,
                  step=event.start_step, dataset=event.dataset,
                  pack_len=(event.pack_len or {}).get("detail"))
        for gpu in event.gpus:
            self._update_gpu(gpu.rank, name=gpu.name, total_gib=gpu.memory_total_gib)

    def _on_step(self, event: Step) -> None:
        self._set(step=event.step, total_steps=event.total_steps, loss=event.loss, lr=event.lr,
                  epoch=event.epoch, tokens_per_s=event.tokens_per_s,
                  elapsed_s=event.elapsed_s, eta_s=event.eta_s)
        self.new_points.append(StepPoint(event.step, event.loss, event.lr))
        for gpu in event.gpus:
            reserved = gpu.device_mem_reserved_gib
            known = self.gpus.get(gpu.rank)
            peak = max(known.peak_gib if known else 0.0, reserved)
            self._update_gpu(gpu.rank, reserved_gib=reserved, peak_gib=peak)

    def _update_gpu(self, rank: int, **changes: object) -> None:
        """The rank's memory figures with `changes`, keeping what earlier events said."""
        known = self.gpus.get(rank) or GpuMemory(rank, "", None)
        self.gpus[rank] = replace(known, **changes)  # type: ignore[arg-type]

    def snapshot(self, **extra: object) -> RunSnapshot:
        """Current figures; drains the step points gathered since the previous snapshot."""
        points, eval_points = tuple(self.new_points), tuple(self.new_eval_points)
        self.new_points.clear()
        self.new_eval_points.clear()
        figures = {name: getattr(self.figures, name) for name in _FIGURES}
        return RunSnapshot(**{  # type: ignore[arg-type]
            **figures, "new_points": points, "new_eval_points": eval_points,
            "gpus": tuple(self.gpus[r] for r in sorted(self.gpus)), "notes": tuple(self.notes),
            **extra})
