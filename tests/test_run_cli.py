"""`osstune run` end to end on the tiny CPU demo, a graceful stop through the launcher, resume,
and the refusals that happen before anything is launched."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from osstune.engine.plan.config import load_config
from osstune.engine.session.events import EventReader, read_events
from osstune.engine.session.launch import TrainingProcess
from osstune.tui.cli import app
from tests.engine_fixtures import REPO, engine_env, last_run_end, step_losses, wait_for_event

pytestmark = pytest.mark.slow

OVERRIDES = ["max_steps=4", "sequence_len=256", "save_steps=2", "gradient_accumulation_steps=2"]


def _set_args() -> list[str]:
    return [a for o in OVERRIDES for a in ("--set", o)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "osstune.tui.cli", "run", "tiny-cpu-demo", *_set_args(), "--output",
         str(out)], cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=300)
    return proc, out


def test_osstune_run_tiny_demo_completes(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("step 4/4 loss ") for line in lines), proc.stdout
    assert "vllm serve" in proc.stdout and "sglang.launch_server" in proc.stdout
    reader = EventReader(out / "events.jsonl")
    events = [e.record() for e in reader.poll()]
    assert reader.bad_lines == 0  # every line validates against the schema
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("step") == 4 and kinds.count("checkpoint") == 2
    start = events[0]
    assert start["world_size"] == 1 and start["dataset"]["tokens_trained"] > 0
    step = next(e for e in events if e["type"] == "step")
    assert step["gpus"] == [{"rank": 0, "device_mem_reserved_gib": 0.0, "mem_allocated_gib": 0.0,
                             "mem_active_gib": 0.0}]
    assert events[-1]["status"] == "completed"


def test_tiny_demo_loss_falls(demo_run):
    losses = step_losses(demo_run[1])
    assert losses[4] < losses[1] - 0.1, losses


def test_export_loads_with_transformers(demo_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export = demo_run[1] / "export"
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["GptOssForCausalLM"]
    assert "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(export)
    assert type(model).__name__ == "GptOssForCausalLM"
    tok = AutoTokenizer.from_pretrained(export)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                      add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|start|>user<|message|>hi<|end|><|start|>assistant")
    gen = json.loads((export / "generation_config.json").read_text())
    assert 200002 in gen["eos_token_id"]


def test_stop_then_resume_continues_the_same_loss_curve(demo_run, tmp_path):
    reference = step_losses(demo_run[1])
    cfg = load_config("tiny-cpu-demo", OVERRIDES)
    out = tmp_path / "stopped"
    first = TrainingProcess()
    first.start(cfg, out, env={"HF_HUB_OFFLINE": "1"})
    wait_for_event(out, "run_start")
    first.stop()  # SIGINT: finish the step, checkpoint, status stopped
    assert first.wait(timeout=240) == 0, first.stderr_tail(30)
    end = last_run_end(out)
    assert end["status"] == "stopped"
    stopped_at = end["step"]
    assert 1 <= stopped_at < 4
    assert (out / "checkpoints" / f"step-{stopped_at:06d}" / "COMPLETE").is_file()

    second = TrainingProcess()
    second.start(cfg, out, resume=True, env={"HF_HUB_OFFLINE": "1"})
    assert second.wait(timeout=240) == 0, second.stderr_tail(30)
    assert last_run_end(out)["status"] == "completed"
    resumed = {e["step"]: e["loss"] for e in read_events(out) if e["type"] == "step"}
    assert set(resumed) == {1, 2, 3, 4}
    for step in range(1, 5):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_run_refuses_more_gpus_than_exist(tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["run", "tiny-cpu-demo", "--set", "gpus=4", "--set",
                                      "distributed.fsdp=true", "--output", str(out)])
    assert result.exit_code == 1
    assert "asks for 4 GPU(s) per node, 0 visible" in result.output
    assert not out.exists()


def test_run_refuses_offload_without_the_host_ram_for_its_states(tmp_path):
    """Pre-flight, before any process starts: one line naming host RAM, what the machine has and
    what the offloaded states need (a model far larger than any test machine's memory)."""
    out = tmp_path / "never"
    big = ["distributed.gpus=2", "distributed.fsdp=true", "distributed.cpu_offload=true",
           "distributed.backend=gloo", "model.architecture.intermediate_size=65536",
           "model.architecture.num_local_experts=4096"]
    result = CliRunner().invoke(app, ["run", "tiny-cpu-demo", *[a for o in big for a in
                                                                 ("--set", o)],
                                      "--output", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("osstune: error: "), result.output
    found = re.search(r"host RAM: ([\d.]+) GiB, this config needs ~([\d.]+) TiB \(CPU offload\)",
                      lines[0])
    assert found and float(found[2]) > 1 and float(found[1]) < 1000, lines[0]
    assert "Traceback" not in result.output and not out.exists()


def test_run_refuses_to_reuse_an_output_without_resume(demo_run):
    before = (demo_run[1] / "events.jsonl").read_bytes()
    result = CliRunner().invoke(app, ["run", "tiny-cpu-demo", "--output", str(demo_run[1])])
    assert result.exit_code == 1
    assert "already holds a run" in result.output
    assert (demo_run[1] / "events.jsonl").read_bytes() == before


def test_run_rejects_an_unknown_override():
    result = CliRunner().invoke(app, ["run", "tiny-cpu-demo", "--set", "training.nope=1"])
    assert result.exit_code == 2
    assert "training.nope: unknown key" in result.output


def test_demo_disk_figures_match_the_readme(demo_run):
    """The preset's disk figure and the README's measured sizes are what a demo run writes."""
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    readme = (REPO / "README.md").read_text()
    stated = {kind: int(n.replace(",", "")) for kind, n in re.findall(
        r"(checkpoint is|export) ([\d,]+) bytes", readme)}

    def size(path):
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    checkpoints = sorted((out / "checkpoints").iterdir())
    assert checkpoints
    for ckpt in checkpoints:
        assert abs(size(ckpt) - stated["checkpoint is"]) < 0.01 * stated["checkpoint is"]
    assert abs(size(out / "export") - stated["export"]) < 0.01 * stated["export"]
    requirements = load_config("tiny-cpu-demo").requirements
    assert size(out) < requirements.disk_gib * 1024**3


def test_disk_estimate_is_what_the_demo_writes(demo_run):
    """Issue 17: the estimate's checkpoint and export terms are the sizes a full run writes (the
    checkpoint: weights + both AdamW states), and the whole run stays within the estimate."""
    from osstune.engine.plan.estimate import estimate

    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]

    def size(path):
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    est = estimate(load_config("tiny-cpu-demo", OVERRIDES))
    (name, total), = [(n, v) for n, v in est.disk_terms.items() if n.startswith("checkpoints")]
    count = int(name.split("(")[1].split(" x ")[0])
    assert name == f"checkpoints ({count} x weights + AdamW)"
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert 1 <= len(checkpoints) <= count  # keep_last + 1 at the peak of a save
    for ckpt in checkpoints:
        assert size(ckpt) == pytest.approx(total / count * 1024**3, rel=0.02)
    assert size(out / "export") == pytest.approx(est.disk_terms["export (safetensors)"]
                                                 * 1024**3, rel=0.05)
    assert size(out) <= est.disk_gib * 1024**3


def _cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "osstune.tui.cli", *args], cwd=REPO,
                          env=engine_env(), capture_output=True, text=True, timeout=300)


def test_resume_path_continues_from_that_checkpoint(demo_run, tmp_path):
    """`--resume PATH` as the README and the engine's hints write it: another folder's step 2."""
    reference = step_losses(demo_run[1])
    step2 = demo_run[1] / "checkpoints" / "step-000002"
    out = tmp_path / "from-step-2"
    proc = _cli(["run", "tiny-cpu-demo", *_set_args(), "--output", str(out), "--resume",
                 str(step2)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = next(e for e in read_events(out) if e["type"] == "run_start")
    assert start["start_step"] == 2 and start["resumed_from"] == str(step2)
    resumed = step_losses(out)
    assert set(resumed) == {3, 4}
    for step in (3, 4):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_resume_refusals_are_one_line_before_anything_starts(demo_run, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["run", "tiny-cpu-demo", "--output", str(tmp_path / "o"),
                                  "--resume", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert f"--resume {tmp_path / 'nope'}: not a finished checkpoint folder" in missing.output
    stray = runner.invoke(app, ["run", "tiny-cpu-demo", str(tmp_path / "nope")])
    assert stray.exit_code == 2 and "goes after --resume" in stray.output
    empty = runner.invoke(app, ["run", "tiny-cpu-demo", "--output", str(tmp_path / "o"),
                                "--resume"])
    assert empty.exit_code == 2 and "holds no finished checkpoint" in empty.output
    assert not (tmp_path / "o").exists()


def test_a_dataset_error_is_said_once_and_the_failed_folder_starts_over(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    out = tmp_path / "run"
    first = _cli(["run", "tiny-cpu-demo", "--dataset", str(bad), "--output", str(out)])
    assert first.returncode == 2
    assert first.stderr.splitlines() == [
        f"osstune: error: {bad}: no usable examples (1 row read; skipped by reason: unknown "
        "role: 1) (hint: check dataset.path and its format (`osstune inspect` shows what is "
        "trained))"]
    assert "no usable examples" not in first.stdout
    assert not (out / "checkpoints").exists()

    again = CliRunner().invoke(app, ["run", "tiny-cpu-demo", "--output", str(out), "--resume"])
    assert again.exit_code == 2
    assert "ended before its first save: run without --resume to start over" in again.output

    second = _cli(["run", "tiny-cpu-demo", *_set_args(), "--set", "max_steps=1", "--output",
                   str(out)])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "the earlier run there ended before its first save" in second.stderr
    kinds = [e["type"] for e in read_events(out)]
    assert kinds.count("run_start") == 1 and "error" not in kinds  # the failed attempt is gone
