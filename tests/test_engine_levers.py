"""The engine's performance knobs (training.compile / unchecked_layers / moe_chunk_tokens).

CPU only: what the config accepts, what each knob resolves to per device and layout, that the
built model carries the levers, and that they change no number (one step, tiny GPT-OSS, fp32).
"""

from __future__ import annotations

import pytest
import torch

from osstune.engine.plan.config import ConfigError, validate
from osstune.engine.session.events import read_events
from osstune.engine.trainer import train
from osstune.engine.trainer.levers import plan_levers
from osstune.engine.trainer.model import load_model_config
from tests.engine_fixtures import tiny_config, write_config

CPU = torch.device("cpu")


def _cfg(tmp_path, **training):
    data = tiny_config(tmp_path, training={**training})
    return validate(data, "test")


@pytest.mark.parametrize("training, message", [
    ({"unchecked_layers": -1}, "training.unchecked_layers: must be a layer count >= 0 or 'auto'"),
    ({"unchecked_layers": "all"}, "training.unchecked_layers: must be a layer count"),
    ({"unchecked_layers": True}, "training.unchecked_layers: must be a layer count"),
    ({"unchecked_layers": 2, "gradient_checkpointing": False},
     "unchecked_layers needs gradient_checkpointing: true"),
    ({"compile": "yes"}, "training.compile: Input should be 'auto', 'off', 'mlp' or 'layer'"),
    ({"moe_chunk_tokens": 0}, "training.moe_chunk_tokens: Input should be greater than"),
])
def test_bad_lever_values_name_the_key(tmp_path, training, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(tiny_config(tmp_path, training=training), "run.yaml")


def test_lever_defaults_and_accepted_values(tmp_path):
    t = validate({"model": {"id": "openai/gpt-oss-20b"}}, "x").training
    assert (t.compile, t.unchecked_layers, t.moe_chunk_tokens) == ("auto", 0, 16384)
    t = _cfg(tmp_path, gradient_checkpointing=True, unchecked_layers="auto", compile="layer",
             moe_chunk_tokens=None).training
    assert (t.compile, t.unchecked_layers, t.moe_chunk_tokens) == ("layer", "auto", None)


def test_auto_levers_resolve_per_device_and_layout(tmp_path):
    cfg = _cfg(tmp_path, gradient_checkpointing=True, unchecked_layers="auto")
    cpu = plan_levers(cfg, CPU, 1)
    assert (cpu.compile, cpu.unchecked_layers, cpu.fit_unchecked) == (None, 0, False)
    assert cpu.warnings == ["training.unchecked_layers: auto fits layers to one CUDA card; on "
                            "CPU every layer stays checkpointed (unchecked_layers 0)"]
    gpu = plan_levers(cfg, torch.device("cuda", 0), 1)  # planning only: no CUDA needed
    assert (gpu.compile, gpu.fit_unchecked, gpu.warnings) == ("mlp", True, [])
    sharded = _cfg(tmp_path, gradient_checkpointing=True, unchecked_layers="auto")
    sharded.distributed.fsdp = True
    fsdp = plan_levers(sharded, torch.device("cuda", 0), 2)
    assert (fsdp.compile, fsdp.fit_unchecked) == (None, False)
    assert "under FSDP every layer stays checkpointed" in fsdp.warnings[0]
    asked = plan_levers(_cfg(tmp_path, compile="mlp"), CPU, 1)
    assert asked.compile is None
    assert asked.warnings == ["training.compile: mlp needs CUDA; running uncompiled on CPU"]
    assert plan_levers(_cfg(tmp_path, compile="off"), torch.device("cuda", 0), 1).compile is None


def _built(cfg):
    rt = train.Runtime(0, 1, 0, CPU)
    torch.manual_seed(cfg.training.seed)
    return train.build(cfg, rt, load_model_config(cfg, CPU), plan_levers(cfg, CPU, 1)), rt


def _batch(seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(2):
        ids = torch.randint(1, 1000, (96,), generator=gen).tolist()
        # two packed examples per row: positions restart at 60
        rows.append(train.PackedRow(ids, ids, list(range(60)) + list(range(36)), [60, 36]))
    return train.collate(rows)


def test_unchecked_layers_split_checkpointing_and_change_no_number(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = {}
    for unchecked, chunk in ((0, None), (1, 50)):
        cfg = _cfg(tmp_path, gradient_checkpointing=True, unchecked_layers=unchecked,
                   moe_chunk_tokens=chunk)
        built, rt = _built(cfg)
        layers = built.lm.model.layers
        assert [layer.gradient_checkpointing for layer in layers] == [True, unchecked == 0]
        expected = [f"checkpointing: {2 - unchecked} of 2 layers"]
        if chunk:
            expected.append("moe blocks: checkpointed chunks of 50 tokens on longer rows")
        assert built.info.levers == expected
        built.objective.train()
        loss, trained, _ = train.forward_backward(built.objective, [_batch()], rt)
        grads = {n: p.grad.clone() for n, p in built.objective.named_parameters()
                 if p.grad is not None}
        results[unchecked] = (loss, trained, grads)
    (loss0, n0, grads0), (loss1, n1, grads1) = results[0], results[1]
    assert n0 == n1 > 0
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    assert grads0.keys() == grads1.keys() and len(grads0) > 10
    for name, grad in grads0.items():
        torch.testing.assert_close(grads1[name], grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_too_many_unchecked_layers_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg(tmp_path, gradient_checkpointing=True, unchecked_layers=3)
    with pytest.raises(ConfigError, match="unchecked_layers: 3 is more than the model's 2"):
        _built(cfg)


def test_engine_run_warns_and_reports_levers(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)  # the engine sets it
    data = tiny_config(tmp_path, training={"gradient_checkpointing": True, "max_steps": 1,
                                           "unchecked_layers": "auto", "sequence_len": 128,
                                           "gradient_accumulation_steps": 1})
    path = write_config(tmp_path, data)
    assert train.main(["--config", str(path), "--no-save"]) == 0
    events = read_events(tmp_path / "tiny")
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert any("unchecked_layers: auto" in w and "on CPU" in w for w in warnings)
    start = next(e for e in events if e["type"] == "run_start")
    assert start["model"]["levers"] == [
        "checkpointing: 2 of 2 layers",
        "moe blocks: checkpointed chunks of 16384 tokens on longer rows"]
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "completed"


def test_planned_compile_wraps_every_moe_block(tmp_path, monkeypatch):
    from osstune.engine.trainer.levers import apply_block_levers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg(tmp_path)
    built, _ = _built(cfg)
    plan = plan_levers(cfg, torch.device("cuda", 0), 1)  # what one GPU gets: compile mlp
    plan.moe_chunk_tokens = None
    assert [layer.mlp._compiled_call_impl for layer in built.lm.model.layers] == [None, None]
    assert apply_block_levers(built.lm, plan) == ["compile: mlp x2"]  # lazy: nothing runs here
    assert all(layer.mlp._compiled_call_impl is not None for layer in built.lm.model.layers)
    assert all(layer._compiled_call_impl is None for layer in built.lm.model.layers)


def test_compile_off_survives_yaml_reading_off_as_false() -> None:
    from osstune.engine.plan.config import load_config

    cfg = load_config("tiny-cpu-demo", ["training.compile=off"])
    assert cfg.training.compile == "off"
