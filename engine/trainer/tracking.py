"""Experiment trackers (`report_to: [tensorboard, wandb, mlflow]`), fed from the events.

`events.jsonl` stays the source of truth: `TrackedEventWriter` writes each event first, then
hands the metrics of `step` and `eval` events to every tracker (`train/loss`, `eval/loss`, ...
at the event's step). A tracker whose package is missing costs one `warning` event and the run
goes on; a tracker that fails while logging is switched off with one warning.

A resumed run (`--resume`) continues the same tracking run: W&B and MLflow run ids are kept in
`OUTPUT/tracking.json` and handed back (W&B `id=..., resume="allow"`, MLflow `run_id=...`) when
run_start says the run was resumed; a fresh start in the folder begins a new tracking run.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

from osstune.engine.session.events import EventWriter

STEP_METRICS = ("loss", "lr", "grad_norm", "tokens_per_s", "epoch", "mfu", "steps_per_s")
EVAL_METRICS = ("loss",)
TRACKING_FILE = "tracking.json"  # {"wandb": run id, "mlflow": run id} of this output folder
INSTALL = {"tensorboard": "pip install tensorboard", "wandb": "pip install wandb",
           "mlflow": "pip install mlflow"}


def metrics_of(event: dict[str, Any]) -> dict[str, float]:
    """`train/...` from a step event, `eval/...` from an eval event; numbers only."""
    prefix, names = {"step": ("train", STEP_METRICS), "eval": ("eval", EVAL_METRICS)}.get(
        event["type"], ("", ()))
    return {f"{prefix}/{n}": float(event[n]) for n in names
            if isinstance(event.get(n), (int, float)) and not isinstance(event.get(n), bool)}


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:250]
    return out


def saved_run_ids(output: Path) -> dict[str, str]:
    """The tracking run ids an earlier attempt in this folder kept; {} when none (or unreadable)."""
    try:
        data = json.loads((output / TRACKING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


def save_run_ids(output: Path, ids: dict[str, str]) -> None:
    with contextlib.suppress(OSError):  # losing the id only costs the resume a new tracking run
        (output / TRACKING_FILE).write_text(json.dumps(ids), encoding="utf-8")


class TensorBoard:
    name = "tensorboard"
    run_id = None  # the log folder is the run: a resumed run writes on into it

    def __init__(self, output: Path, run_name: str, config: dict[str, Any],
                 resume_id: str | None = None) -> None:
        try:
            writer_cls = importlib.import_module("tensorboardX").SummaryWriter
        except ImportError:
            writer_cls = importlib.import_module("torch.utils.tensorboard").SummaryWriter
        self.writer = writer_cls(log_dir=str(output / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class WandB:
    name = "wandb"

    def __init__(self, output: Path, run_name: str, config: dict[str, Any],
                 resume_id: str | None = None) -> None:
        self.wandb = importlib.import_module("wandb")
        again = {"id": resume_id, "resume": "allow"} if resume_id else {}
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "osstune"),
                                   name=run_name, config=config, dir=str(output), **again)
        self.run_id = getattr(self.run, "id", None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


class MLflow:
    name = "mlflow"

    def __init__(self, output: Path, run_name: str, config: dict[str, Any],
                 resume_id: str | None = None) -> None:
        self.mlflow = importlib.import_module("mlflow")
        self.note: str | None = None  # said as a warning when the run starts
        active = None
        if resume_id:  # its parameters are logged already (MLflow refuses changing them)
            try:
                active = self.mlflow.start_run(run_id=resume_id)
            except Exception as e:  # not in this tracking store (another URI, deleted): a new
                active = None  # run, as W&B's resume="allow" does, and said
                self.note = (f"run {resume_id} cannot be resumed ({type(e).__name__}: {e}); "
                             "tracked as a new run")
        if active is None:
            active = self.mlflow.start_run(run_name=run_name)
            self.mlflow.log_params(_flat(config))
        self.run_id = getattr(getattr(active, "info", None), "run_id", None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        # MLflow metric names take no '/' on some stores: train/loss -> train_loss.
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in metrics.items()}, step=step)

    def close(self, status: str) -> None:
        self.mlflow.end_run(status="FINISHED" if status == "completed" else "FAILED")


BACKENDS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


class TrackedEventWriter(EventWriter):
    """An EventWriter that also feeds the trackers named in `report_to` (started at run_start)."""

    def __init__(self, output_dir: str | os.PathLike[str], report_to: list[str],
                 run_name: str) -> None:
        super().__init__(output_dir)
        self.output, self.report_to, self.run_name = Path(output_dir), list(report_to), run_name
        self.trackers: list[Any] = []
        self._status = "failed"

    def emit(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        event = super().emit(kind, **fields)
        if kind == "run_start":
            self._start(event.get("config", {}), resumed=event.get("resumed_from") is not None)
        elif kind == "run_end":
            self._status = event["status"]
        elif kind in ("step", "eval"):
            self._log(metrics_of(event), event["step"])
        return event

    def _start(self, config: dict[str, Any], resumed: bool) -> None:
        earlier = saved_run_ids(self.output) if resumed else {}
        for name in self.report_to:
            if any(t.name == name for t in self.trackers):
                continue
            try:
                tracker = BACKENDS[name](self.output, self.run_name, config, earlier.get(name))
                self.trackers.append(tracker)
                if (note := getattr(tracker, "note", None)) is not None:
                    super().emit("warning", message=f"report_to {name}: {note}")
            except ImportError:
                super().emit("warning", message=f"report_to {name}: the package is not "
                             f"installed ({INSTALL[name]}); not tracked, training goes on")
            except Exception as e:  # a tracker must never stop a run
                super().emit("warning", message=f"report_to {name}: cannot start: "
                             f"{type(e).__name__}: {e}; not tracked")
        ids = {t.name: t.run_id for t in self.trackers if isinstance(t.run_id, str)}
        if ids:
            save_run_ids(self.output, ids)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for tracker in list(self.trackers):
            try:
                tracker.log(metrics, step)
            except Exception as e:
                self.trackers.remove(tracker)
                super().emit("warning", message=f"report_to {tracker.name}: logging failed "
                             f"({type(e).__name__}: {e}); switched off")

    def close(self) -> None:
        for tracker in self.trackers:
            # closing a tracker must not hide the run's result
            with contextlib.suppress(Exception):
                tracker.close(self._status)
        self.trackers = []
        super().close()


def open_event_writer(output_dir: str | os.PathLike[str], cfg: Any) -> EventWriter:
    if not cfg.report_to:
        return EventWriter(output_dir)
    return TrackedEventWriter(output_dir, cfg.report_to, cfg.name)
