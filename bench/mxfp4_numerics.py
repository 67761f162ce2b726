"""Packed MXFP4 experts == the bf16 path on the same weights, on the GPU (bench/gpu/mxfp4.sh, d).

Two twins of a gpt-oss model with 20b's shapes and 2 layers: one with packed random experts (the
`model.experts: mxfp4` path: blocks/scales dequantized just in time by the fused CUDA kernel), one
whose bf16 expert weights are those blocks dequantized (the `bf16` path, stock experts forward).
Both get the same LoRA (r=8 on q/k/v/o, B drawn non-zero so every adapter has a gradient), every
layer checkpointed (the packed backward dequantizes again in the recompute), one row, the chunked
loss. Compared: the loss and every LoRA gradient; then again with expert LoRA on both
(ops/moe_lora.py). Also: the fused dequantizer equals the eager one bit for bit on a whole layer.

The tolerance is bf16 rounding of a different matmul/summation order (the stock experts add the k
outputs with index_add_ in bf16, the grouped path sums them in fp32): |loss diff| <= 1e-3 x loss,
and every gradient within 2e-2 of its norm (relative L2).
"""

from __future__ import annotations

from typing import Any

import torch

LOSS_RTOL = 1e-3
GRAD_RTOL = 2e-2


def twins(cfg_values: dict[str, Any], device: torch.device, dtype: torch.dtype
          ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(packed, bf16) GptOssForCausalLM with the same weights; experts random MXFP4."""
    from transformers import GptOssConfig, GptOssForCausalLM

    from osstune.engine.trainer.model import materialize_random, reset_rotary
    from osstune.engine.trainer.mxfp4 import fill_random_packed, pack_experts, packed_state

    config = GptOssConfig(**cfg_values)
    with torch.device("meta"):
        packed = GptOssForCausalLM._from_config(config, dtype=dtype, attn_implementation="eager")
        plain = GptOssForCausalLM._from_config(config, dtype=dtype, attn_implementation="eager")
    pack_experts(packed)
    materialize_random(packed, device, seed=0)
    fill_random_packed(packed, seed=0)
    plain.to_empty(device=device)
    with torch.no_grad():
        plain.load_state_dict(packed_state(packed, dequantized=True), strict=True)
    reset_rotary(plain, device)
    return packed, plain


def _seeded(params: list[tuple[str, torch.nn.Parameter]], seed: int, std: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def lora_grads(model: torch.nn.Module, ids: torch.Tensor, expert_lora: bool
               ) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and LoRA gradients of one checkpointed step (adapters drawn from fixed seeds)."""
    from peft import LoraConfig, get_peft_model

    from osstune.engine.trainer.ops.loss import linear_cross_entropy
    from osstune.engine.trainer.ops.moe_lora import add_expert_lora

    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=["q_proj", "k_proj", "v_proj",
                                                            "o_proj"]))
    base = peft.get_base_model()
    if expert_lora:
        add_expert_lora(base, r=8, alpha=16)
    trainable = [(n, p) for n, p in peft.named_parameters() if p.requires_grad]
    _seeded(trainable, seed=5, std=0.02)
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft.train()
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    hidden = base.model(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
    targets = torch.full_like(ids[0], -100)
    targets[:-1] = ids[0, 1:]
    loss_sum, count = linear_cross_entropy(hidden[0], base.lm_head.weight, targets)
    loss = loss_sum / count
    loss.backward()
    grads = {n.replace(".default", ""): p.grad.detach().float().clone() for n, p in trainable}
    return float(loss), grads


def compare(packed: tuple[float, dict[str, torch.Tensor]],
            plain: tuple[float, dict[str, torch.Tensor]]) -> dict[str, Any]:
    (loss_a, grads_a), (loss_b, grads_b) = packed, plain
    if grads_a.keys() != grads_b.keys():
        return {"ok": False, "error": "different trainable parameters"}
    worst_name, worst = "", 0.0
    for name, grad in grads_b.items():
        rel = float((grads_a[name] - grad).norm() / grad.norm().clamp_min(1e-30))
        if rel >= worst:
            worst_name, worst = name, rel
    loss_rel = abs(loss_a - loss_b) / abs(loss_b)
    return {"loss_packed": round(loss_a, 6), "loss_bf16": round(loss_b, 6),
            "loss_rel_diff": loss_rel, "grads": len(grads_b),
            "max_grad_rel_l2_diff": worst, "worst_grad": worst_name,
            "bitwise_equal": loss_a == loss_b and all(
                torch.equal(grads_a[n], g) for n, g in grads_b.items()),
            "ok": loss_rel <= LOSS_RTOL and worst <= GRAD_RTOL}


def dequantizer_exact(model: torch.nn.Module) -> dict[str, Any]:
    """The fused dequantizer (CUDA) == the eager gather on a whole layer, and == the CPU path."""
    from osstune.engine.trainer.hub_layout import _byte_table, _decode, dequantize
    from osstune.engine.trainer.mxfp4 import experts_modules

    experts = experts_modules(model)[0][1]
    out: dict[str, Any] = {}
    for name in ("gate_up_proj", "down_proj"):
        blocks, scales = (getattr(experts, f"{name}_{s}") for s in ("blocks", "scales"))
        fused = dequantize(blocks, scales)
        groups = blocks.shape[-2]
        eager = _decode(blocks.reshape(-1, groups, 16), scales.reshape(-1, groups),
                        _byte_table(torch.bfloat16, blocks.device)).view(fused.shape)
        cpu = dequantize(blocks[:1].cpu(), scales[:1].cpu())
        out[name] = torch.equal(fused, eager) and torch.equal(fused[:1].cpu(), cpu)
        del fused, eager
    return out


def numerics(cfg_values: dict[str, Any], seq: int, device: torch.device) -> dict[str, Any]:
    """Part (d): both comparisons and the dequantizer check, as one JSON-able dict."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    two = {**cfg_values, "num_hidden_layers": 2,
           "layer_types": ["sliding_attention", "full_attention"]}
    vocab = min(cfg_values["vocab_size"] - 1000, 200_000) if cfg_values["vocab_size"] > 2000 \
        else cfg_values["vocab_size"] - 12
    ids = torch.randint(0, vocab, (1, seq), generator=torch.Generator().manual_seed(3)).to(device)
    result: dict[str, Any] = {"layers": 2, "seq": seq, "dtype": str(dtype).replace("torch.", ""),
                              "loss_rtol": LOSS_RTOL, "grad_rel_l2_tol": GRAD_RTOL}
    for label, expert_lora in (("attention_lora", False), ("attention_and_expert_lora", True)):
        try:  # one failing comparison is reported; the other still runs
            packed, plain = twins(two, device, dtype)
            if label == "attention_lora":
                result["dequantizer_exact"] = dequantizer_exact(packed)
            result[label] = compare(lora_grads(packed, ids, expert_lora),
                                    lora_grads(plain, ids, expert_lora))
        except Exception as exc:
            result[label] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:600]}
        packed = plain = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["ok"] = (result["attention_lora"]["ok"] and result["attention_and_expert_lora"]["ok"]
                    and all(result.get("dequantizer_exact", {"missing": False}).values()))
    return result
