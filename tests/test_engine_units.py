"""Engine pieces in-process: loss normalisation, packing masks, schedules, checkpoints bookkeeping,
model config, pre-flight. Small and fast: a 2-layer GPT-OSS with hidden size 32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from osstune.engine.data.dataset import PAD_ID, PackedRow
from osstune.engine.plan.config import load_config, validate
from osstune.engine.plan.hardware import GpuInfo, HardwareProfile
from osstune.engine.plan.preflight import PreflightError, preflight
from osstune.engine.trainer import checkpoint as ckpt
from osstune.engine.trainer.model import (
    ModelError,
    build_meta_model,
    load_model_config,
    materialize_random,
)
from osstune.engine.trainer.objective import IGNORE_INDEX, CausalLMObjective, shift_labels
from osstune.engine.trainer.optim import lr_lambda
from osstune.engine.trainer.train import RowStream, Runtime, collate, forward_backward
from tests.engine_fixtures import tiny_config

CPU = torch.device("cpu")
RT = Runtime(rank=0, world_size=1, local_rank=0, device=CPU)


@pytest.fixture(scope="module")
def tiny_objective(tmp_path_factory):
    cfg = validate(tiny_config(tmp_path_factory.mktemp("units")), "test")
    config = load_model_config(cfg, CPU)
    lm = build_meta_model(config, torch.float32)
    materialize_random(lm, CPU, seed=7)
    return CausalLMObjective(lm, torch.float32)


def _row(n: int, trained: int, seed: int) -> PackedRow:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 5000, (n,), generator=g).tolist()
    labels = [IGNORE_INDEX] * (n - trained) + ids[n - trained:]
    return PackedRow(ids, labels, list(range(n)), [n])


def _grads(objective) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
    objective.zero_grad(set_to_none=True)
    return out


def test_accumulation_normalises_by_all_trained_tokens(tiny_objective):
    # Two micro-batches with very different trained-token counts.
    a, b = _row(40, 30, 1), _row(40, 4, 2)
    single = collate([a, b])
    loss_big, n_big, _ = forward_backward(tiny_objective, [single], RT)
    big = _grads(tiny_objective)
    loss_acc, n_acc, _ = forward_backward(tiny_objective, [collate([a]), collate([b])], RT)
    acc = _grads(tiny_objective)

    assert n_big == n_acc == 34
    assert float(loss_acc) / n_acc == pytest.approx(float(loss_big) / n_big, rel=1e-5)
    for name, g in big.items():
        torch.testing.assert_close(acc[name], g, rtol=1e-4, atol=1e-7)

    # The mean of per-micro-batch means is a different (wrong) objective: the test can fail.
    with torch.no_grad():
        la, na, _ = tiny_objective(*_tensors(collate([a])))
        lb, nb, _ = tiny_objective(*_tensors(collate([b])))
    mean_of_means = (float(la) / int(na) + float(lb) / int(nb)) / 2
    assert abs(mean_of_means - float(loss_big) / n_big) > 1e-3


def test_packed_examples_do_not_see_each_other(tiny_objective):
    a, b = _row(24, 10, 3), _row(16, 8, 4)
    packed = PackedRow(a.input_ids + b.input_ids, a.labels + b.labels,
                       a.position_ids + b.position_ids, [24, 16])
    with torch.no_grad():
        together = tiny_objective(*_tensors(collate([packed])))[0]
        apart = sum(tiny_objective(*_tensors(collate([r])))[0] for r in (a, b))
    assert float(together) == pytest.approx(float(apart), rel=1e-5)


def _tensors(batch):
    return batch.input_ids, batch.position_ids, batch.targets


def test_shift_labels_never_crosses_an_example_boundary():
    labels = torch.tensor([[-100, 5, 6, -100, 8, 9]])
    positions = torch.tensor([[0, 1, 2, 0, 1, 2]])
    assert shift_labels(labels, positions).tolist() == [[5, 6, -100, 8, 9, -100]]


def test_collate_pads_as_an_untrained_segment():
    batch = collate([_row(5, 2, 1), _row(3, 3, 2)])
    assert batch.input_ids.shape == (2, 5)
    assert batch.input_ids[1, 3:].tolist() == [PAD_ID, PAD_ID]
    assert batch.position_ids[1].tolist() == [0, 1, 2, 0, 1]
    assert batch.real_tokens == 8
    assert batch.trained_tokens == int((batch.targets != IGNORE_INDEX).sum())


@pytest.mark.parametrize("schedule,expected", [
    ("constant_with_warmup", [0.5, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.5, 1.0, 0.75, 0.5, 0.25]),
    ("cosine", [0.5, 1.0, 0.8535534, 0.5, 0.1464466]),
])
def test_schedules(schedule, expected):
    factor = lr_lambda(schedule, warmup_steps=1, total_steps=5)
    assert [factor(s) for s in range(5)] == pytest.approx(expected)


def test_row_stream_reshuffles_each_epoch_deterministically():
    rows = [_row(4, 1, i) for i in range(5)]
    s1, s2 = RowStream(rows, seed=3, shuffle=True), RowStream(rows, seed=3, shuffle=True)
    first = [s1.row(p).input_ids for p in range(5)]
    assert first == [r.input_ids for r in rows]  # epoch 0 keeps the packer's order
    second = [s1.row(p).input_ids for p in range(5, 10)]
    assert sorted(map(tuple, second)) == sorted(map(tuple, first)) and second != first
    assert [s2.row(p).input_ids for p in range(5, 10)] == second


def test_random_init_is_the_same_with_or_without_lora(tmp_path):
    from osstune.engine.trainer.lora import apply_lora

    cfg = validate(tiny_config(tmp_path, method="lora"), "test")
    config = load_model_config(cfg, CPU)
    plain = build_meta_model(config, torch.float32)
    materialize_random(plain, CPU, seed=5)
    with_lora = apply_lora(build_meta_model(config, torch.float32), cfg.lora)
    materialize_random(with_lora.get_base_model(), CPU, seed=5)
    merged = with_lora.merge_and_unload()  # lora_B = 0: merging changes nothing
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[name], tensor)


def test_model_config_overrides_and_errors(tmp_path):
    cfg = validate(tiny_config(tmp_path), "test")
    config = load_model_config(cfg, CPU)
    assert config.num_hidden_layers == 2
    assert config.layer_types == ["sliding_attention", "full_attention"]
    assert config._attn_implementation == "eager"
    assert config.output_router_logits is False
    bad_key = validate(tiny_config(tmp_path, model={"architecture": {"num_layerz": 2}}), "t")
    with pytest.raises(ModelError, match="model.architecture.num_layerz"):
        load_model_config(bad_key, CPU)
    missing = validate(tiny_config(tmp_path, model={"id": str(tmp_path / "nope")}), "t")
    with pytest.raises(ModelError, match="no such model folder"):
        load_model_config(missing, CPU)


def test_auto_attention_is_flex_on_cuda_eager_on_cpu():
    from osstune.engine.trainer.model import resolve_attn_implementation

    assert resolve_attn_implementation("auto", torch.device("cuda", 0)) == "osstune_flex"
    assert resolve_attn_implementation("auto", CPU) == "eager"
    assert resolve_attn_implementation("eager", torch.device("cuda", 0)) == "eager"


def test_checkpoint_bookkeeping(tmp_path):
    root = ckpt.checkpoints_root(tmp_path)
    (root / ".tmp-step-000009").mkdir(parents=True)  # a save that was killed
    done = root / "step-000004"
    done.mkdir()
    assert ckpt.latest_checkpoint(tmp_path) is None  # no COMPLETE marker yet
    (done / ckpt.COMPLETE).write_text("ok\n")
    assert ckpt.latest_checkpoint(tmp_path) == done
    with pytest.raises(ckpt.CheckpointError, match="missing .metadata"):
        ckpt.read_trainer_state(done)
    (done / ".metadata").write_bytes(b"x")
    (done / ckpt.STATE_FILE).write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="corrupt trainer_state.json"):
        ckpt.read_trainer_state(done)
    state = ckpt.TrainerState(step=4, total_steps=8, world_size=1, method="full", elapsed_s=1.0,
                              scheduler={})
    (done / ckpt.STATE_FILE).write_text(json.dumps(state.__dict__))
    with pytest.raises(ckpt.CheckpointError, match=r"corrupt \.metadata"):
        ckpt.read_trainer_state(done)
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.read_trainer_state(root / ".tmp-step-000009")


def _profile(tmp_path: Path, gpus: int, ram: float = 64) -> HardwareProfile:
    return HardwareProfile(
        gpus=[GpuInfo(index=i, name="NVIDIA H100", memory_total_gib=79.6) for i in range(gpus)],
        ram_gib=ram, ram_available_gib=ram, cpu_count=8, disk_free_gib=1000,
        hf_cache_free_gib=1000, driver_version=None, cuda_version=None,
        gpu_error=None if gpus else "no driver", source="test", output_dir=str(tmp_path))


def test_preflight_refuses_more_gpus_than_visible(tmp_path):
    cfg = validate(tiny_config(tmp_path, distributed={"gpus": 4, "fsdp": True}), "t")
    with pytest.raises(PreflightError, match=r"asks for 4 GPU\(s\) per node, 1 visible"):
        preflight(cfg, tmp_path / "out", resume=False, force=False, profile=_profile(tmp_path, 1))
    waived = preflight(cfg, tmp_path / "out", resume=False, force=True,
                       profile=_profile(tmp_path, 1))
    assert waived and "4 GPU" in waived[0]
    # gloo runs the processes on CPU: no GPU needed.
    gloo = validate(tiny_config(tmp_path, distributed={"gpus": 2, "fsdp": True,
                                                       "backend": "gloo"}), "t")
    assert preflight(gloo, tmp_path / "out", resume=False, force=False,
                     profile=_profile(tmp_path, 0)) == []


def test_preflight_protects_an_existing_run(tmp_path):
    from osstune.engine.session.run_folder import failed_attempt, holds_run

    cfg = validate(tiny_config(tmp_path), "t")
    out = tmp_path / "run"
    out.mkdir()
    (out / "events.jsonl").write_text("")
    # an attempt that failed before its first save holds nothing: the next run starts over
    (out / "checkpoints" / ".tmp-step-000002").mkdir(parents=True)
    assert preflight(cfg, out, resume=False, force=False, profile=_profile(tmp_path, 0)) == []
    assert failed_attempt(out) and not holds_run(out)
    (out / "checkpoints" / "step-000001").mkdir()
    (out / "checkpoints" / "step-000001" / "COMPLETE").write_text("ok\n")
    with pytest.raises(PreflightError, match="already holds a run"):
        preflight(cfg, out, resume=False, force=False, profile=_profile(tmp_path, 0))
    assert preflight(cfg, out, resume=True, force=False, profile=_profile(tmp_path, 0)) == []
    assert holds_run(out) and not failed_attempt(out)
    results = tmp_path / "exported"
    (results / "export").mkdir(parents=True)  # a result without checkpoints (keep_last: 0)
    assert holds_run(results)


def test_a_step_left_mid_publish_counts_as_resumable(tmp_path):
    from osstune.engine.session.run_folder import holds_run, recoverable_checkpoints, resumable

    out = tmp_path / "run"
    root = out / "checkpoints"
    (root / ".tmp-step-000003").mkdir(parents=True)  # half-written: no COMPLETE
    assert not resumable(out) and recoverable_checkpoints(out) == []
    old = root / ".old-step-000002"  # a re-save killed between its renames
    old.mkdir()
    (old / "COMPLETE").write_text("ok\n")
    assert recoverable_checkpoints(out) == [old] and resumable(out) and holds_run(out)
    (root / "step-000002").mkdir()  # the real name exists: the copy is stale, not recoverable
    assert recoverable_checkpoints(out) == [] and not resumable(out)


def test_preflight_judges_the_estimate_of_the_config(tmp_path):
    # 20b FFT + offload: ~170 GiB of host RAM (estimate), whatever the requirements block says
    cfg = load_config("gpt-oss-20b-fft-fsdp2-offload", ["model.init=random"])
    cfg.requirements = None
    with pytest.raises(PreflightError, match=r"host RAM: 64 GiB, this config needs ~170 GiB "
                                             r"\(CPU offload\)"):
        preflight(cfg, tmp_path / "o", resume=False, force=False, profile=_profile(tmp_path, 2))
    # the GPU memory of the edited config: 131,072-token LoRA rows do not fit an 80 GB card
    long = load_config("gpt-oss-20b-lora-1gpu", ["model.init=random", "sequence_len=131072",
                                                 "training.moe_chunk_tokens=null"])
    with pytest.raises(PreflightError, match=r"GPU 0 \(NVIDIA H100\) has 79.6 GiB; this config "
                                             r"needs ~\d+(\.\d)? GiB per GPU"):
        preflight(long, tmp_path / "o", resume=False, force=False, profile=_profile(tmp_path, 1))
    fine = load_config("gpt-oss-20b-lora-1gpu", ["model.init=random"])
    assert preflight(fine, tmp_path / "o", resume=False, force=False,
                     profile=_profile(tmp_path, 1)) == []
