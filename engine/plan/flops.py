"""Training FLOPs per token for GPT-OSS shapes (for MFU). Torch-free: the bench and the engine
both count with this one formula."""

from __future__ import annotations

from typing import Any


def active_matmul_params(cfg: dict[str, Any]) -> int:
    h, d = cfg["hidden_size"], cfg["head_dim"]
    attn = h * d * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"])
    router = h * cfg["num_local_experts"]
    experts = cfg["num_experts_per_tok"] * 3 * h * cfg["intermediate_size"]  # gate_up + down
    return cfg["num_hidden_layers"] * (attn + router + experts) + cfg["vocab_size"] * h


def mean_attended_keys(seq: int, window: int | None) -> float:
    """Mean over query positions 0..seq-1 of the keys a causal (windowed) mask lets it see."""
    if window is None or window >= seq:
        return (seq + 1) / 2
    return (window * (window + 1) / 2 + (seq - window) * window) / seq


def train_flops_per_token(cfg: dict[str, Any], seq: int) -> float:
    d_attn = cfg["num_attention_heads"] * cfg["head_dim"]
    attended = sum(mean_attended_keys(seq, cfg["sliding_window"] if t == "sliding_attention"
                                      else None) for t in cfg["layer_types"])
    # QK^T and PV: 2 x 2 x d_attn FLOPs per attended key forward, x3 for forward + backward
    return 6.0 * active_matmul_params(cfg) + 12.0 * d_attn * attended
