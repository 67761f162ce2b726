"""engine.trainer.ops.loss against the plain `F.cross_entropy(hidden @ W.T)` path (loss and
gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from osstune.engine.trainer.ops.loss import default_chunk_size, linear_cross_entropy


def _inputs(n: int, h: int, v: int, dtype: torch.dtype, ignore_every: int = 3):
    gen = torch.Generator().manual_seed(n * 7 + v)
    hidden = torch.randn(n, h, generator=gen).to(dtype)
    weight = (torch.randn(v, h, generator=gen) / h**0.5).to(dtype)
    labels = torch.randint(0, v, (n,), generator=gen)
    labels[::ignore_every] = -100
    return hidden, weight, labels


def _stock(hidden, weight, labels, scale: float = 1.0):
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    # what transformers' ForCausalLM loss does: logits in the model dtype, upcast for the loss
    loss = F.cross_entropy((hidden @ weight.t()).float(), labels, ignore_index=-100,
                           reduction="sum")
    (loss * scale).backward()
    return loss.detach(), hidden.grad, weight.grad


def _ours(hidden, weight, labels, chunk_size: int, scale: float = 1.0, train_weight=True):
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_(train_weight)
    loss, n = linear_cross_entropy(hidden, weight, labels, chunk_size=chunk_size)
    (loss * scale).backward()
    return loss.detach(), n, hidden.grad, weight.grad


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_fp32_matches_stock(chunk_size):
    hidden, weight, labels = _inputs(67, 32, 301, torch.float32)
    ref_loss, ref_gh, ref_gw = _stock(hidden, weight, labels, scale=0.25)
    loss, n, gh, gw = _ours(hidden, weight, labels, chunk_size, scale=0.25)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert int(n) == int((labels != -100).sum())
    # tolerance: fp32 summation order only
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gh, ref_gh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-6)
    assert gh[labels == -100].abs().max() == 0  # untrained positions get no gradient


def test_bf16_matches_stock_within_bf16_rounding():
    hidden, weight, labels = _inputs(130, 64, 500, torch.bfloat16)
    ref_loss, ref_gh, ref_gw = _stock(hidden, weight, labels)
    loss, _, gh, gw = _ours(hidden, weight, labels, chunk_size=32)
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16
    # tolerance: loss 1e-4 relative (fp32 LSE over identical bf16 logits); grads 2 bf16 ulps
    # (our weight gradient sums chunks in fp32, stock in one bf16 matmul).
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gh.float(), ref_gh.float(), rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(gw.float(), ref_gw.float(), rtol=2e-2, atol=1e-3)


def test_frozen_weight_gets_no_gradient_and_hidden_gradient_is_unchanged():
    hidden, weight, labels = _inputs(40, 16, 90, torch.float32)
    _, ref_gh, _ = _stock(hidden, weight, labels)
    _, _, gh, gw = _ours(hidden, weight, labels, chunk_size=8, train_weight=False)
    assert gw is None
    torch.testing.assert_close(gh, ref_gh, rtol=1e-5, atol=1e-6)


def test_nothing_trained_gives_zero_loss_and_zero_gradient():
    hidden, weight, labels = _inputs(10, 8, 20, torch.float32)
    labels[:] = -100
    loss, n, gh, gw = _ours(hidden, weight, labels, chunk_size=4)
    assert float(loss) == 0.0 and int(n) == 0
    assert gh.abs().max() == 0 and gw.abs().max() == 0


def test_no_grad_forward_returns_the_loss():
    hidden, weight, labels = _inputs(20, 8, 30, torch.float32)
    with torch.no_grad():
        loss, n = linear_cross_entropy(hidden, weight, labels, chunk_size=6)
    ref = F.cross_entropy(hidden @ weight.t(), labels, reduction="sum")
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)


def test_default_chunk_keeps_one_chunk_of_fp32_logits_near_one_gib():
    chunk = default_chunk_size(201088)
    assert chunk == 1024 and chunk * 201088 * 4 <= 1 << 30


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="shapes do not line up"):
        linear_cross_entropy(torch.zeros(4, 8), torch.zeros(10, 8), torch.zeros(5).long())
    with pytest.raises(ValueError, match=r"expected hidden \[N,H\]"):
        linear_cross_entropy(torch.zeros(2, 4, 8), torch.zeros(10, 8), torch.zeros(8).long())
