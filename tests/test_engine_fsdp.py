"""FSDP2 on CPU with gloo: 2 processes train, save sharded checkpoints, export and merge; a resume
continues the same loss curve, also on 8 ranks from the 2-rank checkpoint (resharding)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from osstune.engine.session.events import EventReader
from osstune.tui.cli import app
from tests.engine_fixtures import last_run_end, run_engine, step_losses, tiny_config, write_config

pytestmark = pytest.mark.slow

# 8 rows per optimizer step either way: 2 ranks x 4 micro-batches, or 8 ranks x 1.
FSDP = {"gpus": 2, "fsdp": True, "backend": "gloo"}
TRAINING = {"micro_batch_size": 1, "gradient_accumulation_steps": 4, "max_steps": 4,
            "gradient_checkpointing": True, "sequence_len": 256, "eval_steps": 2}
# 3 held-out conversations: on 8 ranks most ranks evaluate only masked padding rows.
DATASET = {"path": "builtin:osstune-sample", "val_size": 3}


def eval_losses(output_dir):
    from osstune.engine.session.events import read_events

    return {e["step"]: e["loss"] for e in read_events(output_dir) if e["type"] == "eval"}


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    cfg = tiny_config(tmp, "fsdp", distributed=FSDP, training=TRAINING,
                      dataset=DATASET)
    path = write_config(tmp, cfg)
    proc = run_engine(["--config", str(path)], nproc=2)
    return proc, tmp / "fsdp", path, tmp


def test_two_processes_train_checkpoint_and_export(fsdp_run):
    proc, out, _, _ = fsdp_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    reader = EventReader(out / "events.jsonl")
    events = [e.record() for e in reader.poll()]
    assert reader.bad_lines == 0
    start = events[0]
    assert start["type"] == "run_start" and start["world_size"] == 2
    assert [g["rank"] for g in start["gpus"]] == [0, 1]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert set(eval_losses(out)) == {2, 4}
    assert all([g["rank"] for g in e["gpus"]] == [0, 1] for e in steps)  # gathered from both
    assert last_run_end(out)["status"] == "completed"
    # One shard per rank in each kept checkpoint.
    for step in (2, 4):
        folder = out / "checkpoints" / f"step-{step:06d}"
        assert sorted(p.name for p in folder.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    config = json.loads((out / "export" / "config.json").read_text())
    assert config["architectures"] == ["GptOssForCausalLM"]  # never FSDPGptOssForCausalLM


def test_export_loads_and_merge_matches_it(fsdp_run):
    from transformers import AutoModelForCausalLM

    _, out, path, _ = fsdp_run
    model = AutoModelForCausalLM.from_pretrained(out / "export")
    assert type(model).__name__ == "GptOssForCausalLM"
    result = CliRunner().invoke(app, ["merge-sharded-fsdp-weights", str(path)])
    assert result.exit_code == 0, result.output
    exported = load_file(out / "export" / "model.safetensors")
    merged = load_file(out / "merged" / "model.safetensors")
    assert exported.keys() == merged.keys()
    for key, tensor in exported.items():
        torch.testing.assert_close(merged[key], tensor, rtol=0, atol=0)
    assert json.loads((out / "merged" / "config.json").read_text())["architectures"] == [
        "GptOssForCausalLM"]


def test_resume_on_two_processes_continues_the_curve(fsdp_run):
    _, out, _, tmp = fsdp_run
    cfg = tiny_config(tmp, "fsdp-resumed", distributed=FSDP, training=TRAINING,
                      dataset=DATASET, output={"export": False})
    path = write_config(tmp, cfg)
    proc = run_engine(["--config", str(path), "--resume",
                       str(out / "checkpoints" / "step-000002")], nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    resumed, reference = step_losses(tmp / "fsdp-resumed"), step_losses(out)
    assert set(resumed) == {3, 4}
    for step in (3, 4):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5), step
    assert eval_losses(tmp / "fsdp-resumed")[4] == pytest.approx(eval_losses(out)[4], rel=1e-5)


def test_eight_ranks_resume_a_two_rank_checkpoint(fsdp_run):
    """Issue 7's CPU stand-in: the 8-rank code path (gloo, tiny shapes), resharded from 2."""
    _, out, _, tmp = fsdp_run
    training = {**TRAINING, "gradient_accumulation_steps": 1}
    cfg = tiny_config(tmp, "fsdp8", distributed={**FSDP, "gpus": 8}, training=training,
                      dataset=DATASET, output={"export": False})
    path = write_config(tmp, cfg)
    proc = run_engine(["--config", str(path), "--resume",
                       str(out / "checkpoints" / "step-000002")], nproc=8, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    events = [e.record() for e in EventReader(tmp / "fsdp8" / "events.jsonl").poll()]
    step = next(e for e in events if e["type"] == "step")
    assert [g["rank"] for g in step["gpus"]] == list(range(8))
    resumed, reference = step_losses(tmp / "fsdp8"), step_losses(out)
    for s in (3, 4):  # the same rows per step, summed in another order
        assert resumed[s] == pytest.approx(reference[s], rel=1e-4), s
    # the same validation tokens, spread over 8 ranks (5 of them evaluate padding only)
    assert eval_losses(tmp / "fsdp8")[4] == pytest.approx(eval_losses(out)[4], rel=1e-4)
    folder = tmp / "fsdp8" / "checkpoints" / "step-000004"
    assert len(list(folder.glob("*.distcp"))) == 8
