"""The estimator's shape-derived terms that issue 13's H200 CLI runs corrected: chunked MoE blocks
on long rows (memory kept and the extra pass), LoRA's fp32 input copies, packed experts
(uncompiled, dequantized at every use, loaded onto the GPU)."""

from __future__ import annotations

import dataclasses

import pytest

from osstune.engine.plan.config import load_config
from osstune.engine.plan.estimate import estimate, memory_inputs
from osstune.engine.plan.memory import (
    attention_bytes_per_token,
    lora_input_bytes_per_token,
    moe_bytes_per_token,
    unchecked_extra_bytes_per_token,
    unchecked_layer_gib,
)
from osstune.engine.plan.shapes import model_shapes
from osstune.engine.plan.speed import SpeedInputs, speed_terms

LORA = "gpt-oss-20b-lora-1gpu"
MXFP4 = "gpt-oss-20b-lora-mxfp4"
S = model_shapes("openai/gpt-oss-20b", {})
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


def test_lora_keeps_fp32_copies_of_the_adapted_inputs() -> None:
    # peft casts each adapted projection's input to the fp32 adapters: 4 bytes x in_features
    assert lora_input_bytes_per_token(S, QKVO) == 4 * (3 * 2880 + 64 * 64)
    assert lora_input_bytes_per_token(S, ("q_proj",)) == 4 * 2880
    # a full fine-tune's base linears keep their bf16 inputs instead
    assert lora_input_bytes_per_token(S, None) == 2 * (2880 + 4096)
    assert attention_bytes_per_token(S, 2, QKVO) - attention_bytes_per_token(S, 2, ("q_proj",)) \
        == 4 * (2 * 2880 + 4096)
    # trainable experts also keep the routed rows' input and the activation
    assert moe_bytes_per_token(S, frozen_experts=False) - moe_bytes_per_token(S) \
        == 4 * 2 * (2880 + 2880)


def test_rows_longer_than_the_moe_chunk_keep_only_the_blocks_input() -> None:
    cfg = load_config(LORA, ["training.unchecked_layers=24"])
    short = memory_inputs(cfg, S, True, 16384)
    long = memory_inputs(cfg, S, True, 16385)
    per_token_short = unchecked_layer_gib(short) / 16384
    per_token_long = unchecked_layer_gib(long) / 16385
    assert per_token_long * 1024**3 == pytest.approx(attention_bytes_per_token(S, 2, QKVO))
    assert per_token_short * 1024**3 == pytest.approx(
        unchecked_extra_bytes_per_token(S, 2, True, QKVO))
    assert per_token_long < 0.7 * per_token_short
    # the estimate of the H200 run at 20,480 (95.8 GiB measured): its 24 unchecked layers
    est = estimate(load_config(LORA, ["training.pack_len=20480", "training.unchecked_layers=24"]))
    kept = attention_bytes_per_token(S, 2, QKVO) + 2 * 2880
    assert est.gpu_terms["unchecked layer activations"] == pytest.approx(
        24 * 20480 * kept / 1024**3, abs=0.001)
    assert "checkpointed layer inputs" not in est.gpu_terms


def _speed(tokens: int, checked: float, **kw: object) -> dict[str, float]:
    base = SpeedInputs(shapes=S, full_finetune=False, tokens=tokens, row_len=tokens,
                       micro_batches=2, checked_fraction=checked, compiled=True,
                       attention="osstune", moe_chunk=16384, packed_experts=False, offload=False,
                       world_size=1, mean_example_tokens=838.0, gpu_name="NVIDIA H200")
    return speed_terms(dataclasses.replace(base, **kw))


def test_chunked_moe_runs_once_more_in_every_layer() -> None:
    moe_share = 4 * 3 * 2880 * 2880 * 24 / S.active_params()
    for checked in (0.0, 0.5, 1.0):
        unchunked = _speed(16384, checked)["matmuls"]
        chunked = _speed(16385, checked)["matmuls"]
        passes = 2.0 + checked
        assert chunked / unchunked == pytest.approx((passes + moe_share) / passes, rel=1e-6)


def test_packed_experts_dequantize_at_every_use_uncompiled() -> None:
    est = estimate(load_config(MXFP4))
    assert "MoE element-wise (not compiled)" in est.speed_terms_us  # compile auto: off for them
    checked = _speed(2048, 1.0, packed_experts=True)["dequantizing experts"]
    unchecked = _speed(2048, 0.0, packed_experts=True)["dequantizing experts"]
    assert checked / unchecked == pytest.approx(3 / 2)  # forward, backward (+ the recompute)
    chunked = _speed(16385, 1.0, packed_experts=True)["dequantizing experts"] * 16385
    assert chunked / (checked * 2048) == pytest.approx(4 / 3)  # + the MoE chunk's recompute


def test_packed_experts_load_onto_the_gpu_not_the_host() -> None:
    packed = estimate(load_config(MXFP4, ["model.init=pretrained"]))
    bf16 = estimate(load_config(LORA, ["model.init=pretrained"]))
    assert "checkpoint loading" not in packed.host_terms
    assert bf16.host_terms["checkpoint loading"] > 10
    assert packed.host_ram_gib < 4  # measured 3.28 GiB (h200-cli-lora-mxfp4-2048)


def test_adapters_on_the_experts_keep_their_rows_inputs() -> None:
    """LoRA on the expert weights (`lora.target_parameters`) trains through the routed rows: each
    keeps its input and activation for the adapters' gradients, as a full fine-tune's experts do
    (hidden + intermediate bf16 values per routed row, top-4 of them per token)."""
    attn = ["training.unchecked_layers=4", "training.pack_len=null"]
    experts = [*attn, "lora.target_parameters=[mlp.experts.gate_up_proj,mlp.experts.down_proj]"]
    plain = memory_inputs(load_config(LORA, attn), S, True, 8192)
    adapted = memory_inputs(load_config(LORA, experts), S, True, 8192)
    assert plain.frozen_experts and not adapted.frozen_experts
    extra = unchecked_layer_gib(adapted) - unchecked_layer_gib(plain)
    per_token = S.experts_per_tok * 2 * (S.hidden + S.intermediate)  # 4 x 2 x (2880 + 2880)
    assert extra * 1024**3 == pytest.approx(plain.tokens * per_token)
    assert per_token == 46_080
