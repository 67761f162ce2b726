"""engine.trainer.ops.moe_lora against LoRA applied by materialising W + s A B through the stock
experts.

Tolerance: fp32, 1e-5 absolute / 1e-4 relative (the same products summed in another order).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from osstune.engine.trainer.ops.moe_lora import add_expert_lora, merge_expert_lora
from tests.ops_fixtures import tiny_model


def _adapted_model(seed: int = 0):
    model = tiny_model(seed)
    params = add_expert_lora(model, r=4, alpha=8)
    with torch.no_grad():  # B = 0 at init; random B so the adapters change the output
        for p in params:
            p.normal_(std=0.2)
    return model, params


def _merged_weights(model):
    """Stock-path weights W + s A B as differentiable functions of the adapters."""
    weights = {}
    for name, module in model.named_modules():
        lora = getattr(module, "osstune_lora", None)
        if lora is not None:
            for target in lora.targets:
                weights[f"{name}.{target}"] = getattr(module, target) + lora.delta(target)
    return weights


def test_low_rank_grouped_experts_match_materialised_lora():
    model, params = _adapted_model()
    stock = tiny_model()  # same seed: same base weights, stock experts forward
    ids = torch.randint(1, 128, (2, 24), generator=torch.Generator().manual_seed(3))

    loss = model(input_ids=ids, labels=ids).loss
    grads = torch.autograd.grad(loss, params)

    ref_loss = functional_call(stock, _merged_weights(model), args=(),
                               kwargs={"input_ids": ids, "labels": ids}, strict=False).loss
    ref_grads = torch.autograd.grad(ref_loss, params)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_base_expert_weights_are_frozen_and_merge_restores_stock_forward():
    model, _ = _adapted_model()
    experts = model.model.layers[0].mlp.experts
    assert not experts.gate_up_proj.requires_grad and not experts.down_proj.requires_grad
    ids = torch.randint(1, 128, (1, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        assert merge_expert_lora(model) == 2
        merged = model(input_ids=ids).logits
    assert not hasattr(experts, "osstune_lora")
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)


def test_zero_initialised_adapters_leave_the_model_unchanged():
    stock = tiny_model()
    model = tiny_model()
    add_expert_lora(model, r=2, alpha=4, targets=("down_proj",))
    ids = torch.randint(1, 128, (1, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, stock(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="targets must be among"):
        add_expert_lora(tiny_model(), r=2, alpha=4, targets=("up_proj",))
    with pytest.raises(TypeError, match="no GptOssExperts"):
        add_expert_lora(torch.nn.Linear(2, 2), r=2, alpha=4)
