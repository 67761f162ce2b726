"""Offload units: micro-batches merged into passes (same rows, padding never trained, grouped by
the token budget) and the CPU AdamW that offloaded states step with."""

from __future__ import annotations

import torch

from osstune.engine.data.dataset import PAD_ID, PackedRow
from osstune.engine.plan.config import TrainingConfig
from osstune.engine.trainer.objective import IGNORE_INDEX
from osstune.engine.trainer.offload import merge_micro_batches
from osstune.engine.trainer.optim import build_optimizer
from osstune.engine.trainer.train import collate


def _row(n: int, start: int) -> PackedRow:
    ids = list(range(start, start + n))
    return PackedRow(ids, ids, list(range(n)), [n])


def test_merged_pass_holds_every_row_and_trains_the_same_tokens():
    batches = [collate([_row(5, 10)]), collate([_row(3, 20), _row(2, 30)]), collate([_row(4, 40)])]
    (merged,) = merge_micro_batches(batches, max_tokens=100)
    assert merged.input_ids.shape == (4, 5)
    assert merged.trained_tokens == sum(b.trained_tokens for b in batches)
    assert merged.real_tokens == sum(b.real_tokens for b in batches) == 14
    # Row 2 (3 tokens, padded to 5): padding is PAD, untrained, positions restart at 0.
    assert merged.input_ids[1].tolist() == [20, 21, 22, PAD_ID, PAD_ID]
    assert merged.targets[1, 2:].tolist() == [IGNORE_INDEX] * 3
    assert merged.position_ids[1].tolist() == [0, 1, 2, 0, 1]
    assert merged.targets[0].tolist() == batches[0].targets[0].tolist()


def test_passes_respect_the_token_budget_in_order():
    batches = [collate([_row(4, 10 * i)]) for i in range(1, 6)]
    passes = merge_micro_batches(batches, max_tokens=8)  # two 4-token rows per pass
    assert [p.input_ids.shape[0] for p in passes] == [2, 2, 1]
    assert [p.input_ids[0, 0].item() for p in passes] == [10, 30, 50]
    assert merge_micro_batches(batches, max_tokens=1) == batches  # never below one micro-batch


def test_offloaded_states_step_with_the_fused_cpu_adamw():
    params = [torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))]
    training = TrainingConfig(optimizer="adamw_torch")
    opt = build_optimizer(params, training, torch.device("cpu"), states_on_cpu=True)
    assert opt.defaults["fused"] is True
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert opt.state[params[0]]["exp_avg"].dtype == torch.bfloat16  # states take the param dtype
    cpu_run = build_optimizer(params, training, torch.device("cpu"), states_on_cpu=False)
    assert cpu_run.defaults["fused"] is True  # a CPU run's states live on the CPU too
    gpu_run = build_optimizer(params, training, torch.device("cuda"), states_on_cpu=False)
    assert not gpu_run.defaults["fused"]  # built only: adamw_torch on the GPU is foreach


def _params_with_grads(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(64, 32, generator=gen)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


def test_clip_folded_into_the_fused_step_equals_clip_then_step():
    from osstune.engine.trainer.optim import clip_gradients

    training = TrainingConfig(optimizer="adamw_torch")
    folded, plain = _params_with_grads(0), _params_with_grads(0)
    opt_folded = build_optimizer(folded, training, torch.device("cpu"), states_on_cpu=True)
    opt_plain = torch.optim.AdamW(plain, lr=training.learning_rate, foreach=True)
    for max_norm in (1.0, 1e6):  # clipped, then not
        norm_folded = clip_gradients(folded, max_norm, opt_folded)
        norm_plain = torch.nn.utils.clip_grad_norm_(plain, max_norm)
        torch.testing.assert_close(norm_folded, norm_plain)
        assert opt_folded.grad_scale.item() >= 1.0  # the kernel divides by it
        opt_folded.step()
        opt_plain.step()
        for a, b in zip(folded, plain, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)



def test_engine_sets_the_allocator_unless_the_user_did():
    from osstune.engine.trainer import allocator

    env: dict[str, str] = {}
    assert allocator.apply(False, env) == {"conf": "expandable_segments:True", "set_by": "engine"}
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    env = {}
    offload = allocator.apply(True, env)["conf"]
    assert offload.startswith("expandable_segments:True,")
    assert "pinned_use_cuda_host_register:True" in offload
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == offload
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        env = {name: "backend:cudaMallocAsync"}
        assert allocator.apply(True, env) == {"conf": "backend:cudaMallocAsync",
                                              "set_by": f"user ({name})"}
        assert env == {name: "backend:cudaMallocAsync"}  # nothing added beside the user's


def test_gradients_reduce_in_fp32_except_offloaded_runs_of_up_to_two_ranks():
    from osstune.engine.plan.config import DistributedConfig
    from osstune.engine.trainer.fsdp import reduce_dtype

    def rule(**kw) -> bool:
        return DistributedConfig(fsdp=True, **kw).reduces_in_param_dtype

    assert rule(gpus=1, cpu_offload=True) and rule(gpus=2, cpu_offload=True)
    assert not rule(gpus=4, cpu_offload=True)
    assert not rule(gpus=2, nnodes=2, cpu_offload=True)
    assert not rule(gpus=2, cpu_offload=False)
    assert not rule(gpus=1, cpu_offload=True, reduce_dtype="float32")
    assert reduce_dtype(torch.bfloat16, True) == torch.bfloat16
    assert reduce_dtype(torch.bfloat16, False) == torch.float32
