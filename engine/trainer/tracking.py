"""Experiment trackers (`report_to: [tensorboard, wandb, mlflow]`), fed from the events.

`events.jsonl` stays the source of truth: `TrackedEventWriter` writes each event first, then
hands the metrics of `step` and `eval` events to every tracker (`train/loss`, `eval/loss`, ...
at the event's step). A tracker whose package is missing costs one `warning` event and the run
goes on; a tracker that fails while logging is switched off with one warning.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from typing import Any

from osstune.engine.session.events import EventWriter

STEP_METRICS = ("loss", "lr", "grad_norm", "tokens_per_s", "epoch", "mfu", "steps_per_s")
EVAL_METRICS = ("loss",)
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


class TensorBoard:
    name = "tensorboard"

    def __init__(self, output: Path, run_name: str, config: dict[str, Any]) -> None:
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

    def __init__(self, output: Path, run_name: str, config: dict[str, Any]) -> None:
        self.wandb = importlib.import_module("wandb")
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "osstune"),
                                   name=run_name, config=config, dir=str(output))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


class MLflow:
    name = "mlflow"

    def __init__(self, output: Path, run_name: str, config: dict[str, Any]) -> None:
        self.mlflow = importlib.import_module("mlflow")
        self.mlflow.start_run(run_name=run_name)
        self.mlflow.log_params(_flat(config))

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
            self._start(event.get("config", {}))
        elif kind == "run_end":
            self._status = event["status"]
        elif kind in ("step", "eval"):
            self._log(metrics_of(event), event["step"])
        return event

    def _start(self, config: dict[str, Any]) -> None:
        for name in self.report_to:
            if any(t.name == name for t in self.trackers):
                continue
            try:
                self.trackers.append(BACKENDS[name](self.output, self.run_name, config))
            except ImportError:
                super().emit("warning", message=f"report_to {name}: the package is not "
                             f"installed ({INSTALL[name]}); not tracked, training goes on")
            except Exception as e:  # a tracker must never stop a run
                super().emit("warning", message=f"report_to {name}: cannot start: "
                             f"{type(e).__name__}: {e}; not tracked")

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
