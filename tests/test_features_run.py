"""One real tiny run through `osstune run` with the fine-tuner features together: three datasets
in three layouts mixed by weight, a validation split with eval events, a tracker (a stand-in
tensorboardX package on PYTHONPATH), then `osstune chat` on the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from engine_fixtures import REPO, engine_env, tiny_config, write_config
from mix_fixtures import mixed_datasets, three_layouts

from osstune.engine.session.events import EventReader

pytestmark = pytest.mark.slow

FAKE_TENSORBOARDX = '''
import json, os
class SummaryWriter:
    def __init__(self, log_dir):
        os.makedirs(log_dir, exist_ok=True)
        self.f = open(os.path.join(log_dir, "scalars.jsonl"), "a")
    def add_scalar(self, key, value, step):
        self.f.write(json.dumps([key, value, step]) + "\\n")
    def flush(self):
        self.f.flush()
    def close(self):
        self.f.close()
'''


def _cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "osstune.tui.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    fake = tmp / "fake_site" / "tensorboardX"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_TENSORBOARDX)
    cfg = tiny_config(tmp, "mixed", datasets=mixed_datasets(three_layouts(tmp)),
                      dataset={"val_size": 3}, report_to=["tensorboard"],
                      training={"eval_steps": 2, "max_steps": 4},
                      output={"dir": str(tmp / "out"), "save_steps": None})
    env = engine_env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env["PYTHONPATH"]])
    out = tmp / "out"
    proc = _cli(["run", str(write_config(tmp, cfg)), "--output", str(out)], env)
    return proc, out, env


def test_mixed_datasets_train_with_eval_in_events_and_output(mixed_run):
    proc, out, _ = mixed_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    reader = EventReader(out / "events.jsonl")
    events = [e.record() for e in reader.poll()]
    assert reader.bad_lines == 0
    start = events[0]
    sources = start["dataset"]["sources"]
    assert [s["format"] for s in sources] == ["messages", "sharegpt", "messages"]
    assert [s["weight"] for s in sources] == [1.0, 0.5, 2.0]
    assert start["dataset"]["validation"]["examples"] == 3
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(e["loss"] > 0 and e["trained_tokens"] > 0 for e in evals)
    lines = proc.stdout.splitlines()
    for e in evals:
        assert f"eval step {e['step']}: loss {e['loss']:.4f}" in lines
    assert sum(line.startswith("  dataset ") for line in lines) == 3
    assert any(line.startswith("  validation (val_size 3): 3 examples") for line in lines)


def test_tracker_gets_the_event_metrics(mixed_run):
    _, out, _ = mixed_run
    from osstune.engine.session.events import read_events

    scalars = [json.loads(x) for x in (out / "tensorboard" / "scalars.jsonl").read_text()
               .splitlines()]
    events = read_events(out)
    steps = {e["step"]: e["loss"] for e in events if e["type"] == "step"}
    evals = {e["step"]: e["loss"] for e in events if e["type"] == "eval"}
    assert {s: v for k, v, s in scalars if k == "train/loss"} == steps
    assert {s: v for k, v, s in scalars if k == "eval/loss"} == evals
    assert not [e for e in events if e["type"] == "warning" and "report_to" in e["message"]]


def test_chat_answers_on_the_trained_tiny_model(mixed_run):
    proc, out, env = mixed_run
    assert proc.returncode == 0
    chat = _cli(["chat", str(out), "--prompt", "What is 2 plus 2?", "--max-new-tokens", "6",
                 "--reasoning-effort", "low"], env)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert f"[chat] {out / 'export'} on cpu; reasoning effort low; greedy" in chat.stderr
    assert chat.stdout.startswith("[") and chat.stdout.endswith("\n")
    assert "Traceback" not in chat.stderr
    again = _cli(["chat", str(out), "--max-new-tokens", "3", "--temperature", "0.7"], env,
                 input="hi\n/exit\n")
    assert again.returncode == 0 and again.stdout.startswith("[")


@pytest.mark.parametrize("args, message", [
    (["chat", "/no/such/run"], "osstune: error: /no/such/run: no such run folder"),
    (["chat", "."], "osstune: error: .: not a run folder (no config.yaml)"),
])
def test_chat_refusals_are_one_line_exit_2(args, message):
    proc = _cli(args, engine_env())
    assert proc.returncode == 2
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1
