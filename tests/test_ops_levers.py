"""Checkpointing, token-chunked MoE blocks and block compile: same loss and gradients as stock.

Reference: the stock tiny GPT-OSS (eager, no checkpointing). Tolerance: fp32, 1e-5 absolute /
1e-4 relative (recompute and chunking reorder nothing but reductions).
"""

from __future__ import annotations

import pytest
import torch

from osstune.engine.plan.memory import unchecked_extra_bytes_per_token
from osstune.engine.plan.shapes import shapes_from_dict
from osstune.engine.trainer.levers import LeverPlan, apply_levers
from osstune.engine.trainer.ops.checkpointing import (
    checkpoint_layers,
    chunk_moe,
    set_unchecked,
    unchecked_for_budget,
    unchecked_layer_gib,
)
from osstune.engine.trainer.ops.compile import compile_blocks
from tests.ops_fixtures import tiny_model


def _loss_and_grads(model, ids):
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(model, ids):
    ref_loss, ref_grads = _loss_and_grads(tiny_model(), ids)
    loss, grads = _loss_and_grads(model, ids)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")


IDS = torch.randint(1, 128, (2, 20), generator=torch.Generator().manual_seed(7))


def test_chunked_moe_under_checkpointing_matches_stock():
    model = tiny_model()
    checkpoint_layers(model, unchecked=1)
    assert chunk_moe(model, tokens_per_chunk=7) == 2  # 40 tokens -> 6 chunks, last one short
    _assert_same(model, IDS)


def test_compiled_moe_blocks_match_stock():
    model = tiny_model()
    compile_blocks(model, "mlp", backend="aot_eager")  # capture + autograd; no codegen on CPU
    _assert_same(model, IDS)


def test_checkpointed_layer_split_and_budget():
    model = tiny_model()
    assert checkpoint_layers(model, unchecked=0) == 2
    layers = model.model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [True, True]
    assert set_unchecked(model, 1) == 1
    assert [layer.gradient_checkpointing for layer in layers] == [True, False]
    # the estimator's per-layer term for these shapes and this dtype (engine/plan/memory.py)
    shapes = shapes_from_dict(model.config.to_dict())
    per_token = unchecked_extra_bytes_per_token(shapes, next(model.parameters()).element_size())
    per_layer = 2**20 * per_token / 1024**3
    assert unchecked_layer_gib(model, 2**20) == pytest.approx(per_layer)
    assert unchecked_for_budget(model, 2**20, budget_gib=20.0, peak_gib=20 - 2.5 * per_layer) == 2
    assert unchecked_for_budget(model, 2**20, budget_gib=20.0, peak_gib=20 - 1.5 * per_layer) == 1
    assert unchecked_for_budget(model, 2**20, budget_gib=20.0, peak_gib=25.0) == 0
    # uncompiled MoE blocks keep more per layer (the estimator's term): fewer layers fit
    eager = unchecked_layer_gib(model, 2**20, compiled=False)
    assert 2.1 * per_layer < 2 * eager  # so the same spare memory holds 2 compiled, 1 eager
    peak = 20 - 2.1 * per_layer
    assert unchecked_for_budget(model, 2**20, budget_gib=20.0, peak_gib=peak) == 2
    assert unchecked_for_budget(model, 2**20, budget_gib=20.0, peak_gib=peak,
                                compiled=False) == 1
    with pytest.raises(ValueError, match="unchecked layers must be in 0..2"):
        checkpoint_layers(model, unchecked=3)


def test_apply_reports_what_it_switched_on():
    model = tiny_model()
    applied = apply_levers(model, _plan(unchecked_layers=1, expert_lora=(2, 4)))
    assert applied[0].startswith("attention: osstune_flex")
    assert applied[1] == "checkpointing: 1 of 2 layers"
    # 2 layers x 4 experts x r=2 x ((64 + 64) + (32 + 64)) adapter weights
    assert applied[2].startswith("expert LoRA: r=2 alpha=4, 3584 parameters")


def _plan(checkpointing: bool = True, unchecked_layers: int = 0,
          expert_lora: tuple[int, float] | None = None) -> LeverPlan:
    return LeverPlan(checkpointing=checkpointing, unchecked_layers=unchecked_layers,
                     fit_unchecked=False, compile=None, moe_chunk_tokens=None, attention=True,
                     expert_lora=expert_lora)
