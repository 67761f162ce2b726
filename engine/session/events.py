"""The one contract between the engine process and the front-ends: `OUTPUT/events.jsonl`.

The engine (rank 0) appends one JSON object per line; the front-ends read only this file (plus
the engine's log, `OUTPUT/engine.log`). No torch import: front-ends import this module.

Schema version 1. Every event has `v` (schema version), `type`, and `time` (unix seconds). One
pydantic model per type below is the definition: the engine writes through it (`EventWriter`) and
the session reads through it (`EventReader`), so a field is named and typed in one place.

Writers may add fields beyond the models (readers keep and ignore what they do not know), so a
newer engine's events still read. A different `v` is refused: that is the version rule.
The engine adds to run_end what an estimator calibration point needs (with run_start's config,
GPUs and dataset statistics; engine/plan/calibration.py `point_from_events`).

`device_mem_reserved_gib` is `torch.cuda.max_memory_reserved()` in GiB since the previous step
event (peaks are reset after each log); on CPU runs it is 0.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1
EVENTS_FILE = "events.jsonl"
RUN_END_STATUSES = ("completed", "stopped", "failed")
GPU_STEP_FIELDS = ("device_mem_reserved_gib", "mem_allocated_gib", "mem_active_gib")


class _Record(BaseModel):
    # strict: a bool is not an int and "3" is not a number; extra: future fields are kept.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class StartGpu(_Record):
    """run_start: one entry per rank."""

    rank: int
    name: str = ""
    memory_total_gib: float | None = None


class StepGpu(_Record):
    """step: one entry per rank, GiB."""

    rank: int
    device_mem_reserved_gib: float
    mem_allocated_gib: float
    mem_active_gib: float


class _Event(_Record):
    v: Literal[1]
    type: str
    time: float

    def record(self) -> dict[str, Any]:
        """The event as its JSON object (for scripts and tests that want plain dicts)."""
        return self.model_dump(mode="json", exclude_unset=True)


class RunStart(_Event):
    type: Literal["run_start"]
    config: dict[str, Any]
    world_size: int
    gpus: list[StartGpu]
    model: dict[str, Any]
    dataset: dict[str, Any]
    total_steps: int
    start_step: int = 0
    output_dir: str | None = None
    resumed_from: str | None = None
    # PYTORCH_CUDA_ALLOC_CONF of the run and who set it: {"conf": ..., "set_by": "engine" or
    # "user (VARIABLE)"} (engine/trainer/allocator.py)
    cuda_alloc_conf: dict[str, str] | None = None
    # The packed row length and why ({"length", "reason", "detail"}; engine/plan/packlen.py).
    pack_len: dict[str, Any] | None = None


class Step(_Event):
    type: Literal["step"]
    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float
    grad_norm: float | None
    trained_tokens: int
    tokens_per_s: float
    elapsed_s: float
    eta_s: float | None
    gpus: list[StepGpu]
    steps_per_s: float | None = None
    mfu: float | None = None


class Eval(_Event):
    """The token-mean loss on the validation split."""

    type: Literal["eval"]
    step: int
    loss: float
    trained_tokens: int
    rows: int | None = None
    duration_s: float | None = None


class Checkpoint(_Event):
    type: Literal["checkpoint"]
    path: str
    step: int


class WarningEvent(_Event):
    type: Literal["warning"]
    message: str


# The exit code of an engine process (train, merge, chat) that ends on bad input or a full disk:
# the user's to fix (the front-ends exit 2 too).
EXIT_USER_ERROR = 2
# Error kinds the engine ends with exit 2 (bad input: the config, data, model folder or checkpoint,
# a refused pre-flight, a folder owned by a live run, a full disk); a front-end exits 2 for them.
USER_ERROR_KINDS = frozenset({"config", "dataset", "tokenizer", "model", "checkpoint", "preflight",
                              "output_locked", "disk_full"})


class ErrorEvent(_Event):
    type: Literal["error"]
    kind: str
    message: str
    hint: str


class RunEnd(_Event):
    type: Literal["run_end"]
    status: Literal["completed", "stopped", "failed"]
    outputs: dict[str, str]
    step: int | None = None
    peak_mem_reserved_gib: float | None = None  # the largest step device_mem_reserved_gib
    host_rss_peak_gib: float | None = None  # rank 0's peak RSS
    unchecked_layers: int | None = None  # the count `unchecked_layers: auto` fitted


AnyEvent = Union[RunStart, Step, Eval, Checkpoint, WarningEvent, ErrorEvent, RunEnd]  # noqa: UP007
Event = Annotated[AnyEvent, Field(discriminator="type")]
EVENT_TYPES: dict[str, type[_Event]] = {
    "run_start": RunStart, "step": Step, "eval": Eval, "checkpoint": Checkpoint,
    "warning": WarningEvent, "error": ErrorEvent, "run_end": RunEnd,
}
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


class EventSchemaError(ValueError):
    pass


def parse_event(data: Any) -> AnyEvent:
    """The typed event for one JSON object; EventSchemaError names the first field that breaks."""
    if not isinstance(data, dict):
        raise EventSchemaError(f"event is {type(data).__name__}, not an object")
    if data.get("v") != SCHEMA_VERSION:
        raise EventSchemaError(f"event v={data.get('v')!r}, expected {SCHEMA_VERSION}")
    if data.get("type") not in EVENT_TYPES:
        raise EventSchemaError(f"unknown event type {data.get('type')!r}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])  # [0] is the union tag
        raise EventSchemaError(f"{data['type']}: {where}: {first['msg']}") from None


def validate_event(event: Any) -> dict[str, Any]:
    """Raise EventSchemaError unless `event` is a valid event; return it unchanged."""
    parse_event(event)
    return event


class EventWriter:
    """Appends validated events; each line is written with one write() and flushed."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.path = Path(output_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the writer

    def emit(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        """Build the `kind` event from `fields` through its model and append it.

        `kind` is positional-only: error events carry a field named `kind` of their own.
        """
        event = parse_event({"v": SCHEMA_VERSION, "type": kind, "time": time.time(), **fields})
        return self.write(event)

    def write(self, event: _Event) -> dict[str, Any]:
        record = event.record()
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()
        return record

    def close(self) -> None:
        self._fh.close()


@dataclass
class EventReader:
    """Reads typed events incrementally: call `poll()` as often as you like.

    Handles a file that appears late and a partially written last line (kept until its newline).
    Lines that are not valid events are counted in `bad_lines`, never raised.
    """

    path: Path
    _offset: int = 0
    _partial: bytes = b""
    bad_lines: int = 0
    _inode: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def skip_existing(self) -> None:
        """Follow only what is written from now on (earlier attempts stay unread)."""
        self.poll()

    def poll(self) -> list[AnyEvent]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if self._inode is not None and (stat.st_ino != self._inode or stat.st_size < self._offset):
            self._offset, self._partial = 0, b""  # replaced or truncated: start over
        self._inode = stat.st_ino
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                events.append(parse_event(json.loads(line)))
            except (ValueError, EventSchemaError):
                self.bad_lines += 1
        return events

    def __iter__(self) -> Iterator[AnyEvent]:
        yield from self.poll()


def read_typed(output_dir: str | os.PathLike[str], name: str = EVENTS_FILE) -> list[AnyEvent]:
    return EventReader(Path(output_dir) / name).poll()


def read_events(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every valid event of a run as plain JSON objects (scripts, tests, the bench)."""
    return [event.record() for event in read_typed(output_dir)]
