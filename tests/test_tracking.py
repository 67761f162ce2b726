"""report_to: trackers fed from the same metrics as the step/eval events (fake packages, no
network), a missing package is one warning, events.jsonl stays complete."""

from __future__ import annotations

import sys
import types

import pytest

from osstune.engine.session.events import read_events
from osstune.engine.trainer import tracking
from osstune.engine.trainer.tracking import TrackedEventWriter, metrics_of, open_event_writer

GPUS = [{"rank": 0, "device_mem_reserved_gib": 0.0, "mem_allocated_gib": 0.0,
         "mem_active_gib": 0.0}]
STEP = dict(step=3, total_steps=4, epoch=0.5, loss=2.5, lr=1e-4, grad_norm=None,
            trained_tokens=10, tokens_per_s=99.0, elapsed_s=1.0, eta_s=1.0, gpus=GPUS)


def _run(writer):
    writer.emit("run_start", config={"name": "t", "training": {"learning_rate": 1e-4}},
                world_size=1, gpus=[], model={}, dataset={}, total_steps=4)
    writer.emit("step", **STEP)
    writer.emit("eval", step=3, loss=2.75, trained_tokens=7)
    writer.emit("run_end", status="completed", outputs={})
    writer.close()


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append((name, a, k)) or self


def test_metrics_are_the_events_numbers():
    assert metrics_of({"type": "step", **STEP}) == {
        "train/loss": 2.5, "train/lr": 1e-4, "train/tokens_per_s": 99.0, "train/epoch": 0.5}
    assert metrics_of({"type": "eval", "step": 3, "loss": 2.75}) == {"eval/loss": 2.75}
    assert metrics_of({"type": "checkpoint", "step": 3}) == {}


def test_no_report_to_is_the_plain_writer(tmp_path):
    from osstune.engine.session.events import EventWriter

    cfg = types.SimpleNamespace(report_to=[], name="t")
    writer = open_event_writer(tmp_path, cfg)
    assert type(writer) is EventWriter
    writer.close()


def test_tensorboard_scalars(tmp_path, monkeypatch):
    scalars = []

    class SummaryWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, key, value, step):
            scalars.append((key, value, step))

        def flush(self):
            pass

        def close(self):
            scalars.append("closed")

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(
        SummaryWriter=SummaryWriter))
    _run(TrackedEventWriter(tmp_path, ["tensorboard"], "t"))
    assert ("train/loss", 2.5, 3) in scalars and ("eval/loss", 2.75, 3) in scalars
    assert scalars[-1] == "closed"
    assert [e["type"] for e in read_events(tmp_path)] == ["run_start", "step", "eval", "run_end"]


def test_wandb_and_mlflow_get_config_metrics_and_status(tmp_path, monkeypatch):
    wandb, mlflow = Recorder(), Recorder()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    _run(TrackedEventWriter(tmp_path, ["wandb", "mlflow"], "my-run"))
    init = next(c for c in wandb.calls if c[0] == "init")
    assert init[2]["name"] == "my-run" and init[2]["config"]["name"] == "t"
    logs = [c for c in wandb.calls if c[0] == "log"]
    assert logs[0][1][0]["train/loss"] == 2.5 and logs[0][2] == {"step": 3}
    assert logs[1][1][0] == {"eval/loss": 2.75}
    assert ("finish", (), {"exit_code": 0}) in wandb.calls
    params = next(c for c in mlflow.calls if c[0] == "log_params")[1][0]
    assert params["training.learning_rate"] == "0.0001"
    metrics = [c for c in mlflow.calls if c[0] == "log_metrics"]
    assert metrics[1][1][0] == {"eval_loss": 2.75} and metrics[1][2] == {"step": 3}
    assert ("end_run", (), {"status": "FINISHED"}) in mlflow.calls


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_missing_package_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch, name):
    real = tracking.importlib.import_module

    def no_trackers(module, *a):
        if module.split(".")[0] in ("tensorboardX", "wandb", "mlflow") or "tensorboard" in module:
            raise ImportError(f"No module named {module!r}")
        return real(module, *a)

    monkeypatch.setattr(tracking.importlib, "import_module", no_trackers)
    _run(TrackedEventWriter(tmp_path, [name], "t"))
    events = read_events(tmp_path)
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert warnings == [f"report_to {name}: the package is not installed (pip install {name}); "
                        "not tracked, training goes on"]
    assert [e["type"] for e in events if e["type"] != "warning"] == [
        "run_start", "step", "eval", "run_end"]
    assert not (tmp_path / tracking.TRACKING_FILE).exists()  # nothing kept for a resume


def test_a_failing_tracker_is_switched_off_with_one_warning(tmp_path, monkeypatch):
    class Broken:
        def init(self, **kw):
            return self

        def log(self, *a, **k):
            raise RuntimeError("quota exceeded")

        def finish(self, **kw):
            pass

    monkeypatch.setitem(sys.modules, "wandb", Broken())
    writer = TrackedEventWriter(tmp_path, ["wandb"], "t")
    _run(writer)
    warnings = [e["message"] for e in read_events(tmp_path) if e["type"] == "warning"]
    assert warnings == ["report_to wandb: logging failed (RuntimeError: quota exceeded); "
                        "switched off"]


class FakeWandb:
    """wandb's init/log/finish; each init without an id is a new run."""

    def __init__(self):
        self.inits = []

    def init(self, **kw):
        self.inits.append(kw)
        run = types.SimpleNamespace(id=kw.get("id") or f"run{len(self.inits)}")
        run.log = lambda *a, **k: None
        run.finish = lambda **k: None
        return run


class FakeMlflow:
    def __init__(self):
        self.starts, self.params = [], 0

    def start_run(self, run_id=None, run_name=None):
        self.starts.append({"run_id": run_id, "run_name": run_name})
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=run_id or "ml1"))

    def log_params(self, params):
        self.params += 1

    def log_metrics(self, metrics, step):
        pass

    def end_run(self, status):
        pass


def _attempt(tmp_path, resumed_from):
    writer = TrackedEventWriter(tmp_path, ["wandb", "mlflow"], "t")
    writer.emit("run_start", config={"name": "t"}, world_size=1, gpus=[], model={}, dataset={},
                total_steps=4, resumed_from=resumed_from)
    writer.emit("step", **STEP)
    writer.emit("run_end", status="stopped", outputs={})
    writer.close()


def test_a_resumed_run_continues_the_same_tracking_run(tmp_path, monkeypatch):
    wandb, mlflow = FakeWandb(), FakeMlflow()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    _attempt(tmp_path, None)
    assert "id" not in wandb.inits[0] and "resume" not in wandb.inits[0]
    assert (tmp_path / tracking.TRACKING_FILE).is_file()
    _attempt(tmp_path, str(tmp_path / "checkpoints" / "step-000002"))
    assert wandb.inits[1]["id"] == "run1" and wandb.inits[1]["resume"] == "allow"
    assert mlflow.starts[1] == {"run_id": "ml1", "run_name": None}
    assert mlflow.params == 1  # logged once, by the first attempt
    _attempt(tmp_path, None)  # a fresh start in the folder (--force): a new tracking run
    assert "id" not in wandb.inits[2] and mlflow.starts[2]["run_id"] is None


def test_resume_without_a_saved_id_starts_a_tracking_run(tmp_path, monkeypatch):
    wandb = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    (tmp_path / tracking.TRACKING_FILE).write_text("not json")
    writer = TrackedEventWriter(tmp_path, ["wandb"], "t")
    writer.emit("run_start", config={}, world_size=1, gpus=[], model={}, dataset={},
                total_steps=4, resumed_from="elsewhere")
    writer.close()
    assert "id" not in wandb.inits[0]


def test_an_mlflow_run_missing_from_the_store_resumes_as_a_new_tracked_run(tmp_path, monkeypatch):
    """The saved run id is not in this tracking store (another MLFLOW_TRACKING_URI, a deleted
    run): the resumed training is tracked in a new run with its parameters, not untracked."""
    wandb, mlflow = FakeWandb(), FakeMlflow()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    _attempt(tmp_path, None)
    started = mlflow.start_run

    def start_run(run_id=None, run_name=None):
        if run_id is not None:
            raise RuntimeError(f"Run '{run_id}' not found")
        return started(run_id=run_id, run_name=run_name)

    monkeypatch.setattr(mlflow, "start_run", start_run)
    _attempt(tmp_path, str(tmp_path / "checkpoints" / "step-000002"))
    assert mlflow.starts[-1] == {"run_id": None, "run_name": "t"} and mlflow.params == 2
    warnings = [e["message"] for e in read_events(tmp_path) if e["type"] == "warning"]
    assert any(w.startswith("report_to mlflow: run ") and "not found" in w
               and w.endswith("tracked as a new run") for w in warnings), warnings
