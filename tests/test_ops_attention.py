"""engine.trainer.ops.attention against transformers' eager GPT-OSS attention (sinks, windows,
packing).

Reference: the stock eager model run on each packed example separately. Ours: the packed row in
one forward through `osstune_flex` with document masks. CPU flex attention has a forward but no
backward, so gradients are checked with a dense stand-in for the flex kernel (same masks, same
sink rescale code); the real kernel's gradients are checked on CUDA when one is present.
Tolerance: fp32, 2e-5 absolute / 1e-4 relative (summation order only).
"""

from __future__ import annotations

import pytest
import torch

from osstune.engine.trainer.levers import LeverPlan, apply_levers
from osstune.engine.trainer.ops import attention
from osstune.engine.trainer.ops.loss import linear_cross_entropy
from tests.ops_fixtures import dense_flex_attention, tiny_model

LENGTHS = (7, 12, 5)  # three packed examples; 12 > sliding window 4


def _packed_batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = [torch.randint(1, 128, (n,), generator=gen) for n in LENGTHS]
    return ids, torch.cat(ids)[None], torch.cat([torch.arange(n) for n in LENGTHS])[None]


def _stock_loss_per_example(model, ids):
    total = 0.0
    logits = []
    for row in ids:
        out = model(input_ids=row[None], labels=row[None])
        total = total + out.loss * (row.numel() - 1)
        logits.append(out.logits[0])
    return total, torch.cat(logits)


def _ours_loss_packed(model, input_ids, position_ids):
    masks = attention.block_masks(model.config, position_ids, compile_mask=False)
    hidden = model.model(input_ids=input_ids, position_ids=position_ids, attention_mask=masks,
                         use_cache=False).last_hidden_state[0]
    targets = torch.full_like(input_ids[0], -100)
    targets[:-1] = input_ids[0, 1:]
    targets[:-1][position_ids[0, 1:] == 0] = -100
    loss, _ = linear_cross_entropy(hidden, model.lm_head.weight, targets)
    return loss, hidden


def test_document_ids_restart_with_positions():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0]])
    assert attention.document_ids(pos).tolist() == [[1, 1, 1, 2, 2, 3]]


def test_mask_is_causal_within_documents_and_windowed():
    docs = attention.document_ids(torch.tensor([[0, 1, 2, 3, 4, 0, 1]]))
    mod = attention.mask_mod(docs, sliding_window=2)
    q, kv = torch.arange(7).view(-1, 1), torch.arange(7).view(1, -1)
    got = mod(torch.tensor(0), torch.tensor(0), q, kv).int()
    want = torch.tensor([[1, 0, 0, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0, 0, 0],
                         [0, 1, 1, 0, 0, 0, 0],
                         [0, 0, 1, 1, 0, 0, 0],
                         [0, 0, 0, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0, 1, 0],
                         [0, 0, 0, 0, 0, 1, 1]])
    assert torch.equal(got, want)


def test_packed_forward_with_real_flex_matches_eager_per_example():
    stock = tiny_model()
    ours = tiny_model()
    apply_levers(ours, _plan(checkpointing=False))
    assert ours.config._attn_implementation == attention.ATTN_IMPLEMENTATION
    ids, input_ids, position_ids = _packed_batch()
    with torch.no_grad():
        ref_loss, ref_logits = _stock_loss_per_example(stock, ids)
        loss, hidden = _ours_loss_packed(ours, input_ids, position_ids)
    torch.testing.assert_close(hidden @ ours.lm_head.weight.t(), ref_logits, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=2e-5)


def test_single_example_rows_use_the_lookup_free_mask_and_match_eager():
    stock, ours = tiny_model(), tiny_model()
    apply_levers(ours, _plan(checkpointing=False))
    ids = torch.randint(1, 128, (2, 19), generator=torch.Generator().manual_seed(2))
    position_ids = torch.arange(19).expand(2, -1)
    masks = attention.block_masks(ours.config, position_ids, compile_mask=False)
    assert masks["full_attention"].mask_mod.__name__ == "causal"
    with torch.no_grad():
        hidden = ours.model(input_ids=ids, position_ids=position_ids, attention_mask=masks,
                            use_cache=False).last_hidden_state
        ref = stock.model(input_ids=ids, use_cache=False).last_hidden_state
    torch.testing.assert_close(hidden, ref, rtol=1e-4, atol=2e-5)


def test_packed_gradients_match_eager_per_example(monkeypatch):
    monkeypatch.setattr(attention, "flex_attention", dense_flex_attention)
    stock = tiny_model()
    ours = tiny_model()
    apply_levers(ours, _plan(checkpointing=True))
    ours.train()
    ids, input_ids, position_ids = _packed_batch()
    ref_loss, _ = _stock_loss_per_example(stock, ids)
    ref_loss.backward()
    loss, _ = _ours_loss_packed(ours, input_ids, position_ids)
    loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=2e-5)
    grads = dict(stock.named_parameters())
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-4, atol=2e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")
    assert ours.model.layers[0].self_attn.sinks.grad.abs().sum() > 0


def _cuda_sink_attention(bf16: bool):
    torch.manual_seed(0)
    dtype = torch.bfloat16 if bf16 else torch.float32
    shape_q, shape_kv = (1, 8, 512, 64), (1, 2, 512, 64)
    q, k, v = (torch.randn(s, device="cuda", dtype=dtype, requires_grad=True)
               for s in (shape_q, shape_kv, shape_kv))
    sinks = torch.randn(8, device="cuda", requires_grad=True)
    position_ids = torch.cat([torch.arange(200), torch.arange(312)]).view(1, -1).cuda()
    config = type("C", (), {"layer_types": ["sliding_attention"], "sliding_window": 128})
    mask = attention.block_masks(config, position_ids)["sliding_attention"]
    out, _ = attention.sink_flex_attention(torch.nn.Module(), q, k, v, mask, scaling=0.125,
                                           s_aux=sinks)
    return out, torch.autograd.grad(out.float().square().sum(), (q, k, v, sinks))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention backward needs CUDA")
def test_cuda_flex_kernel_matches_dense_reference(monkeypatch):
    out, grads = _cuda_sink_attention(bf16=False)
    monkeypatch.setattr(attention, "_flex", lambda: dense_flex_attention)
    ref_out, ref_grads = _cuda_sink_attention(bf16=False)
    # tolerance: the kernel may use TF32-free fp32 math in another order
    torch.testing.assert_close(out, ref_out, rtol=1e-3, atol=1e-4)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


def _plan(checkpointing: bool = True, unchecked_layers: int = 0,
          expert_lora: tuple[int, float] | None = None) -> LeverPlan:
    return LeverPlan(checkpointing=checkpointing, unchecked_layers=unchecked_layers,
                     fit_unchecked=False, compile=None, moe_chunk_tokens=None, attention=True,
                     expert_lora=expert_lora)


@pytest.mark.parametrize(("batch", "seq", "compiled"), [
    (1, 2048, True), (1, 8192, True), (1, 16_384, True), (1, 131_072, True),  # 2^k blocks
    (1, 12_288, False), (1, 14_336, False), (2, 10_240, False),  # stalled compiling on an H200
    (1, 20_480, True), (2, 12_288, True),  # too big to build densely: compiled (20,480 ran)
    (1, 1000, True),  # ceil(1000 / 128) = 8 blocks: a power of two
])
def test_mask_build_is_compiled_only_where_it_is_known_to_compile_quickly(batch, seq, compiled):
    assert attention.compiled_mask_build(batch, seq, is_cuda=True) is compiled
    assert attention.compiled_mask_build(batch, seq, is_cuda=False) is False


def test_eager_mask_at_a_96_block_length_matches_the_reference_mask():
    seq = 96 * attention.MASK_BLOCK
    position_ids = torch.cat([torch.arange(5000), torch.arange(seq - 5000)])[None]
    config = type("C", (), {"layer_types": ["full_attention"], "sliding_window": 128})()
    mask = attention.block_masks(config, position_ids)["full_attention"]  # CPU: eager
    documents = attention.document_ids(position_ids)[0]
    q = torch.arange(0, seq, 997)
    dense = mask.mask_mod(torch.tensor(0), torch.tensor(0), q[:, None], q[None, :])
    expected = (q[:, None] >= q[None, :]) & (documents[q][:, None] == documents[q][None, :])
    assert torch.equal(dense, expected)
    assert mask.shape[-2:] == (seq, seq)
