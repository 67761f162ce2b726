"""The one contract between the engine process and the front-ends: `OUTPUT/events.jsonl`.

The engine (rank 0) appends one JSON object per line; the wizard and `osstune run` read only this
file (plus the engine's stderr). No torch import: front-ends import this module.

Schema version 1. Every event has `v` (schema version), `type`, and `time` (unix seconds).

- run_start: config (dict), world_size, gpus (list of {rank, name, memory_total_gib}),
  model (dict), dataset (dict of stats), total_steps
- step: step, total_steps, epoch, loss, lr, grad_norm, trained_tokens, tokens_per_s, elapsed_s,
  eta_s, gpus (one entry per rank: {rank, device_mem_reserved_gib, mem_allocated_gib,
  mem_active_gib})
- eval: step, loss (token-mean loss on the validation split), trained_tokens
- checkpoint: path, step
- warning: message
- error: kind, message, hint
- run_end: status (completed / stopped / failed), outputs (dict of name -> path)

Writers may add fields beyond these (readers ignore what they do not know); the engine adds
run_start: start_step, output_dir, resumed_from; step: steps_per_s and, on a CUDA card with a known
bf16 peak, mfu; run_end: step, peak_mem_reserved_gib (the largest step `device_mem_reserved_gib`
of the run), host_rss_peak_gib (rank 0's peak RSS) and unchecked_layers (the count `auto` fitted,
or null) - with run_start's config, GPUs and dataset statistics, what an estimator calibration
point needs (engine/plan/calibration.py point_from_events); eval: rows, duration_s.

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
from typing import Any

SCHEMA_VERSION = 1
EVENTS_FILE = "events.jsonl"
RUN_END_STATUSES = ("completed", "stopped", "failed")

_NUMBER = (int, float)
_OPT_NUMBER = (int, float, type(None))
REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "run_start": {"config": (dict,), "world_size": (int,), "gpus": (list,), "model": (dict,),
                  "dataset": (dict,), "total_steps": (int,)},
    "step": {"step": (int,), "total_steps": (int,), "epoch": _NUMBER, "loss": _NUMBER,
             "lr": _NUMBER, "grad_norm": _OPT_NUMBER, "trained_tokens": (int,),
             "tokens_per_s": _NUMBER, "elapsed_s": _NUMBER, "eta_s": _OPT_NUMBER, "gpus": (list,)},
    "eval": {"step": (int,), "loss": _NUMBER, "trained_tokens": (int,)},
    "checkpoint": {"path": (str,), "step": (int,)},
    "warning": {"message": (str,)},
    "error": {"kind": (str,), "message": (str,), "hint": (str,)},
    "run_end": {"status": (str,), "outputs": (dict,)},
}
GPU_STEP_FIELDS = ("device_mem_reserved_gib", "mem_allocated_gib", "mem_active_gib")


class EventSchemaError(ValueError):
    pass


def validate_event(event: Any) -> dict[str, Any]:
    """Raise EventSchemaError naming the first field that breaks the schema."""
    if not isinstance(event, dict):
        raise EventSchemaError(f"event is {type(event).__name__}, not an object")
    if event.get("v") != SCHEMA_VERSION:
        raise EventSchemaError(f"event v={event.get('v')!r}, expected {SCHEMA_VERSION}")
    kind = event.get("type")
    if kind not in REQUIRED:
        raise EventSchemaError(f"unknown event type {kind!r}")
    if not isinstance(event.get("time"), _NUMBER):
        raise EventSchemaError(f"{kind}: time missing or not a number")
    for name, types in REQUIRED[kind].items():
        if name not in event:
            raise EventSchemaError(f"{kind}: missing field {name!r}")
        value = event[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise EventSchemaError(f"{kind}: field {name!r} has type {type(value).__name__}")
    if kind == "step":
        for i, gpu in enumerate(event["gpus"]):
            for name in ("rank", *GPU_STEP_FIELDS):
                if not isinstance(gpu, dict) or not isinstance(gpu.get(name), _NUMBER):
                    raise EventSchemaError(f"step: gpus[{i}].{name} missing or not a number")
    if kind == "run_end" and event["status"] not in RUN_END_STATUSES:
        raise EventSchemaError(f"run_end: status {event['status']!r} not in {RUN_END_STATUSES}")
    return event


class EventWriter:
    """Appends validated events; each line is written with one write() and flushed."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.path = Path(output_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the writer

    def emit(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        # `kind` is positional-only: error events carry a field named `kind` of their own.
        event = validate_event({"v": SCHEMA_VERSION, "type": kind, "time": time.time(), **fields})
        self._fh.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._fh.flush()
        return event

    def close(self) -> None:
        self._fh.close()


@dataclass
class EventReader:
    """Reads events incrementally: call `poll()` as often as you like.

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

    def poll(self) -> list[dict[str, Any]]:
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
                events.append(validate_event(json.loads(line)))
            except (ValueError, EventSchemaError):
                self.bad_lines += 1
        return events

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self.poll()


def read_events(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return EventReader(Path(output_dir) / EVENTS_FILE).poll()
