"""A tiny random GPT-OSS and a dense stand-in for flex attention (which has no CPU backward)."""

from __future__ import annotations

from types import SimpleNamespace

import torch


def tiny_config(**overrides):
    from transformers import GptOssConfig

    values = dict(vocab_size=128, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
                  layer_types=["sliding_attention", "full_attention"],
                  max_position_embeddings=256, attention_dropout=0.0, pad_token_id=0,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    values.update(overrides)
    return GptOssConfig(**values)


def tiny_model(seed: int = 0, attn_implementation: str = "eager", **overrides):
    from transformers import GptOssForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    config._attn_implementation = attn_implementation
    model = GptOssForCausalLM(config).float()
    with torch.no_grad():  # random sinks and biases so the checks see them
        for layer in model.model.layers:
            layer.self_attn.sinks.normal_()
            layer.mlp.experts.gate_up_proj_bias.normal_(std=0.1)
    return model


def dense_flex_attention(query, key, value, block_mask=None, scale=None, enable_gqa=False,
                         return_aux=None, **_):
    """flex_attention's math with autograd, evaluating the BlockMask's mask_mod densely."""
    batch, heads, seq, dim = query.shape
    key = key.repeat_interleave(heads // key.shape[1], dim=1)
    value = value.repeat_interleave(heads // value.shape[1], dim=1)
    scores = query @ key.transpose(-1, -2) * (dim**-0.5 if scale is None else scale)
    if block_mask is not None:
        dev = query.device
        b = torch.arange(batch, device=dev).view(-1, 1, 1, 1)
        h = torch.arange(heads, device=dev).view(1, -1, 1, 1)
        q_idx = torch.arange(seq, device=dev).view(1, 1, -1, 1)
        kv_idx = torch.arange(seq, device=dev).view(1, 1, 1, -1)
        keep = block_mask.mask_mod(b, h, q_idx, kv_idx).expand_as(scores)
        scores = scores.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.softmax(scores, dim=-1) @ value
    return out, SimpleNamespace(lse=lse)
