"""The engine entry point: LoRA adapter + merge, and bad input (clear message, non-zero exit,
nothing overwritten)."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from typer.testing import CliRunner

from osstune.engine.session.events import read_events
from osstune.engine.trainer.train import EXIT_USER_ERROR, main
from osstune.tui.cli import app
from tests.engine_fixtures import (
    last_run_end,
    run_engine,
    step_losses,
    tiny_config,
    write_config,
)

LORA = {"method": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {"max_steps": 2, "learning_rate": 5e-2, "pack_len": 512},  # 2 x sequence_len
        "output": {"save_steps": 1}}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    cfg = tiny_config(tmp, "lora", **LORA)
    path = write_config(tmp, cfg)
    proc = run_engine(["--config", str(path)])
    return proc, tmp / "lora", path


@pytest.mark.slow
def test_lora_adapter_loads_with_peft_and_merges(lora_run, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from osstune.engine.trainer.merge import base_model
    from osstune.tui.commands.merge import resolve_run

    proc, out, path = lora_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr  # the log tail both front-ends show
    steps = [line for line in proc.stderr.splitlines() if line.startswith("[engine] step ")]
    assert steps and not any("GiB" in line for line in steps)  # a CPU run: no GPU figure
    end = last_run_end(out)
    assert end["status"] == "completed"
    # what a calibration point needs (engine/plan/calibration.py): a CPU run reserves no GPU memory
    assert end["peak_mem_reserved_gib"] == 0 and end["unchecked_layers"] is None
    assert 0.2 < end["host_rss_peak_gib"] < 64
    adapter = out / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    # Only the adapter is trained and checkpointed.
    start = next(e for e in read_events(out) if e["type"] == "run_start")
    assert 0 < start["model"]["trainable_params"] < start["model"]["total_params"] / 10
    # The packed row length and why (run_start), kept for a resume (trainer_state.json)
    assert start["pack_len"] == {"length": 512, "reason": "set", "why": "training.pack_len",
                                 "detail": "512 tokens (training.pack_len)"}
    state = json.loads((out / "checkpoints" / "step-000001" / "trainer_state.json").read_text())
    assert state["pack_len"] == 512

    cfg, _ = resolve_run(str(path))
    peft_model = PeftModel.from_pretrained(base_model(cfg), str(adapter)).eval()
    ids = torch.tensor([[200006, 1428, 200008, 12194, 200007, 200006]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits

    # `osstune chat` on a LoRA run: the same base + adapter, no merge needed
    from osstune.engine.session.chat_target import ChatTarget
    from osstune.engine.trainer.chat import load_model
    from osstune.engine.trainer.merge import merge_lora

    with warnings.catch_warnings():  # peft's PeftModel reads a deprecated transformers property
        warnings.simplefilter("error", FutureWarning)
        chat_model = load_model(ChatTarget(out, "adapter", adapter), cfg,
                                torch.device("cpu")).eval()
        with torch.no_grad():
            torch.testing.assert_close(chat_model(input_ids=ids).logits, expected)
        assert merge_lora(cfg, out) == out / "merged"  # what `osstune merge-lora` runs
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    assert merged.config.architectures == ["GptOssForCausalLM"]
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_lora_resume_continues_the_curve(lora_run):
    _, out, _ = lora_run
    tmp = out.parent
    path = write_config(tmp, tiny_config(tmp, "lora-resumed", **LORA))
    proc = run_engine(["--config", str(path), "--resume", str(out / "checkpoints" / "step-000001")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert step_losses(tmp / "lora-resumed")[2] == pytest.approx(step_losses(out)[2], rel=1e-6)


def _fail_run(tmp_path, capsys, cfg, extra=()):
    path = write_config(tmp_path, cfg)
    code = main(["--config", str(path), *extra])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err
    return err


def test_unknown_model_path(tmp_path, capsys):
    cfg = tiny_config(tmp_path, model={"id": str(tmp_path / "no-such-model")})
    err = _fail_run(tmp_path, capsys, cfg)
    assert f"model {tmp_path / 'no-such-model'}: no such model folder" in err
    error = next(e for e in read_events(tmp_path / "tiny") if e["type"] == "error")
    assert error["kind"] == "model" and error["hint"]
    assert last_run_end(tmp_path / "tiny")["status"] == "failed"


def test_dataset_without_trainable_tokens(tmp_path, capsys):
    data = tmp_path / "users_only.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]})
                              for i in range(3)) + "\n")
    err = _fail_run(tmp_path, capsys, tiny_config(tmp_path, dataset={"path": str(data)}))
    assert str(data) in err and ("no trainable tokens" in err or "no usable examples" in err)


def test_more_gpus_than_exist(tmp_path, capsys):
    cfg = tiny_config(tmp_path, distributed={"gpus": 8, "fsdp": True})
    err = _fail_run(tmp_path, capsys, cfg)
    assert "asks for 8 GPU(s) per node, 0 visible" in err


def test_corrupt_checkpoint_on_resume_changes_nothing(tmp_path, capsys):
    out = tmp_path / "tiny"
    broken = out / "checkpoints" / "step-000002"
    broken.mkdir(parents=True)
    (broken / ".metadata").write_bytes(b"\x80\x04 not a pickle")
    (broken / "__0_0.distcp").write_bytes(b"garbage")
    (broken / "COMPLETE").write_text("ok\n")
    (broken / "trainer_state.json").write_text(json.dumps({
        "step": 2, "total_steps": 4, "world_size": 1, "method": "full", "elapsed_s": 1.0,
        "scheduler": {}, "format": 1}))
    earlier = '{"v":1,"type":"warning","time":1.0,"message":"an earlier attempt"}\n'
    (out / "events.jsonl").write_text(earlier)
    snapshot = {p.name: p.read_bytes() for p in broken.iterdir()}

    err = _fail_run(tmp_path, capsys, tiny_config(tmp_path), extra=["--resume"])
    assert f"checkpoint {broken}: corrupt" in err
    assert {p.name: p.read_bytes() for p in broken.iterdir()} == snapshot
    assert (out / "events.jsonl").read_text().startswith(earlier)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]


def test_resume_without_checkpoint(tmp_path, capsys):
    err = _fail_run(tmp_path, capsys, tiny_config(tmp_path), extra=["--resume"])
    assert "--resume: no finished checkpoint in" in err


def test_bad_config_key(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    cfg["training"]["learning_rat"] = 1
    err = _fail_run(tmp_path, capsys, cfg)
    assert "training.learning_rat: unknown key" in err


def test_merge_sharded_without_checkpoint(tmp_path):
    path = write_config(tmp_path, tiny_config(tmp_path))
    result = CliRunner().invoke(app, ["merge-sharded-fsdp-weights", str(path)])
    assert result.exit_code == 2  # bad input: nothing to merge
    assert "no finished checkpoint" in result.output
    shutil.rmtree(tmp_path / "tiny", ignore_errors=True)


def test_local_pretrained_folder_trains(tmp_path, capsys):
    """A local HF folder (as our export writes it) loads with `init: pretrained` and trains."""
    from osstune.engine.data.tokenizer import load_offline_tokenizer
    from osstune.engine.plan.config import validate
    from osstune.engine.trainer.export import save_full_model
    from osstune.engine.trainer.model import build_meta_model, load_model_config, materialize_random

    cpu = torch.device("cpu")
    cfg = validate(tiny_config(tmp_path), "t")
    config = load_model_config(cfg, cpu)
    model = build_meta_model(config, torch.float32)
    materialize_random(model, cpu, seed=3)
    folder = save_full_model(model.state_dict(), config, load_offline_tokenizer(),
                             tmp_path / "base")

    run_cfg = tiny_config(tmp_path, "from-base", model={"id": str(folder), "init": "pretrained",
                                                         "architecture": {}},
                          training={"max_steps": 1})
    path = write_config(tmp_path, run_cfg)
    code = main(["--config", str(path), "--no-save"])
    assert code == 0, capsys.readouterr().err
    events = read_events(tmp_path / "from-base")
    start = next(e for e in events if e["type"] == "run_start")
    assert start["model"]["init"] == "pretrained"
    assert start["model"]["total_params"] == sum(p.numel() for p in model.parameters())
    assert last_run_end(tmp_path / "from-base")["status"] == "completed"
    assert not (tmp_path / "from-base" / "checkpoints").exists()  # --no-save


def test_merge_checks_its_disk_need_first(tmp_path, monkeypatch):
    from osstune.engine.plan import hardware

    path = write_config(tmp_path, tiny_config(tmp_path))
    monkeypatch.setattr(hardware, "free_gib", lambda _path: 0.001)
    result = CliRunner().invoke(app, ["merge-sharded-fsdp-weights", str(path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "disk: 0.0 GiB free at " in result.output
    assert "merging needs ~0.1 GiB (merged model (safetensors) 0.1 GiB)" in result.output


def _folder_bytes(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
def test_lora_checkpoints_are_adapter_sized_as_the_disk_estimate_counts(lora_run):
    """Issue 17: a LoRA checkpoint holds the adapter and its AdamW states, not the model."""
    from osstune.engine.plan.config import load_config
    from osstune.engine.plan.shapes import model_shapes
    from osstune.engine.plan.storage import checkpoint_gib, disk_terms
    from osstune.engine.plan.units import GIB

    proc, out, path = lora_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config(str(path))
    shapes = model_shapes(cfg.model.id, cfg.model.architecture)
    lora_params = shapes.lora_params(cfg.lora.r, cfg.lora.target_modules,
                                     cfg.lora.target_parameters)
    start = next(e for e in read_events(out) if e["type"] == "run_start")
    assert lora_params == start["model"]["trainable_params"]  # the estimate's count is the run's
    per_checkpoint = checkpoint_gib(cfg, shapes, lora_params, 4) * GIB
    full = shapes.total_params() * 4 * 3  # what a full fine-tune's checkpoint would hold
    for ckpt in sorted((out / "checkpoints").iterdir()):
        size = _folder_bytes(ckpt)
        # fp32 adapter + 2 AdamW states, plus a fixed ~100 KB of metadata, RNG and trainer state
        assert per_checkpoint <= size <= per_checkpoint + 150_000, (ckpt, size, per_checkpoint)
        assert size < full / 100
    terms = disk_terms(cfg, shapes, lora_params, 4, total_steps=2, cached=None)
    assert not any("export (safetensors)" in name for name in terms)
    assert terms["adapter export"] * GIB >= _folder_bytes(out / "adapter") * 0.9


def test_the_engines_own_preflight_refusal_is_an_event(tmp_path, monkeypatch):
    """A refusal only the engine finds (the machine changed since the front-end looked) reaches
    the front-end as a `preflight` error it can offer to force, not as a bare exit code."""
    from osstune.engine.plan import preflight as preflight_mod
    from tests.tui_fixtures import cpu_profile

    monkeypatch.setattr(preflight_mod, "probe", lambda *a, **k: cpu_profile())  # no GPU here
    path = write_config(tmp_path, tiny_config(tmp_path, distributed={"gpus": 1}))
    assert main(["--config", str(path)]) == EXIT_USER_ERROR
    events = read_events(tmp_path / "tiny")
    assert [e["type"] for e in events] == ["error", "run_end"]
    assert events[0]["kind"] == "preflight" and "--force" in events[0]["hint"]
    assert events[0]["message"].startswith("distributed.gpus: the config asks for 1 GPU(s)")
    assert events[1]["status"] == "failed"
    assert not (tmp_path / "tiny" / "checkpoints").exists()


def test_a_refusal_leaves_an_earlier_runs_log_as_it_is(tmp_path, capsys):
    """The engine started on a folder that holds a finished run (no --resume, no --force):
    refused, and the earlier run's events.jsonl does not gain a failed run_end."""
    path = write_config(tmp_path, tiny_config(tmp_path, training={"max_steps": 1}))
    assert main(["--config", str(path)]) == 0
    log = (tmp_path / "tiny" / "events.jsonl").read_bytes()
    assert main(["--config", str(path)]) == EXIT_USER_ERROR
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "tiny" / "events.jsonl").read_bytes() == log
