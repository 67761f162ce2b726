"""CPU offload: fewer parameter round trips per optimizer step.

With FSDP2's CPUOffloadPolicy every forward pass copies each layer's parameters host -> GPU twice
(forward, then again for the checkpointed backward) and every backward copies its gradients back
and adds them to the host gradients. Running a step's gradient-accumulation micro-batches one by
one repeats all of that per micro-batch: 8 micro-batches of 2048 tokens moved the whole model
across PCIe 24 times per step. `merge_micro_batches` stacks consecutive micro-batches into one
pass of up to `PASS_TOKENS` tokens (rows padded to the widest; padding is never trained), so the
parameters cross once per pass. The gradient is the same: the engine normalises the summed loss by
the step's trained-token count, not per micro-batch (only the router's load-balancing term, when
`router_aux_loss_coef` > 0, is then computed over the merged rows, as a larger micro-batch would).
The root module (embeddings, final norm, lm_head) stays gathered from its forward to its backward,
so those 2 x 1.16 GB are gathered once per pass, not twice.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, TypeVar

import torch

from osstune.engine.data.dataset import PAD_ID
from osstune.engine.trainer.objective import IGNORE_INDEX

# Tokens per merged pass: 8 rows of 2048 (the 20b offload recipe's step), measured to fit a
# 24 GB card (README, "CPU offload").
PASS_TOKENS = 16384


class Batch(Protocol):
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    real_tokens: int
    trained_tokens: int


B = TypeVar("B", bound=Batch)


def _pad(t: torch.Tensor, width: int, fill: int | None) -> torch.Tensor:
    pad = width - t.shape[1]
    if pad == 0:
        return t
    if fill is None:  # positions: the padding is its own segment, restarting at 0
        tail = torch.arange(pad, dtype=t.dtype).expand(t.shape[0], pad)
    else:
        tail = torch.full((t.shape[0], pad), fill, dtype=t.dtype)
    return torch.cat([t, tail], dim=1)


def _stack(group: list[B]) -> B:
    if len(group) == 1:
        return group[0]
    width = max(b.input_ids.shape[1] for b in group)
    first = group[0]
    return type(first)(
        input_ids=torch.cat([_pad(b.input_ids, width, PAD_ID) for b in group]),
        position_ids=torch.cat([_pad(b.position_ids, width, None) for b in group]),
        targets=torch.cat([_pad(b.targets, width, IGNORE_INDEX) for b in group]),
        real_tokens=sum(b.real_tokens for b in group),
        trained_tokens=sum(b.trained_tokens for b in group),
    )


def merge_micro_batches(batches: list[B], max_tokens: int | None = None) -> list[B]:
    """Consecutive micro-batches stacked into passes of at most `max_tokens` (rows x width;
    default PASS_TOKENS)."""
    max_tokens = max_tokens or PASS_TOKENS
    merged: list[B] = []
    group: list[B] = []
    for b in batches:
        rows = sum(g.input_ids.shape[0] for g in group) + b.input_ids.shape[0]
        width = max([g.input_ids.shape[1] for g in group] + [b.input_ids.shape[1]])
        if group and rows * width > max_tokens:
            merged.append(_stack(group))
            group = []
        group.append(b)
    if group:
        merged.append(_stack(group))
    return merged


# Host memory of one offloading process beyond its shards: torch, the CUDA context, pinned
# staging, the dataset. Proxy: 64.3 GiB RSS for 7.74B bf16 parameters x 8 B = 57.7 GiB
# (bench/results/2026-11-29-h200-offload-proxy-8layers.json).
PROCESS_OVERHEAD_GIB = 7.0
GIB = 1024**3


def parameter_count(config: Any) -> int:
    """Parameters of a GPT-OSS model from its config (embeddings, layers, norm, lm_head)."""
    h, v, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    heads, kv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    experts, inter = config.num_local_experts, config.intermediate_size
    attention = heads + 2 * (heads * d * h + heads * d) + 2 * (kv * d * h + kv * d) - heads * d + h
    router = experts * h + experts
    moe = experts * (h * 2 * inter + 2 * inter + inter * h + h)
    per_layer = attention + router + moe + 2 * h
    heads_out = 1 if config.tie_word_embeddings else 2
    return heads_out * v * h + layers * per_layer + h


def host_ram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def host_ram_problem(config: Any, dtype_bytes: int, world_size: int, nnodes: int,
                     ram_gib: float | None = None) -> str | None:
    """One line when this node's host RAM cannot hold its ranks' offloaded shards, else None.

    Per parameter: weight, gradient and both AdamW states in the model dtype (4 x dtype bytes);
    each node holds 1 / nnodes of them, plus PROCESS_OVERHEAD_GIB per process.
    """
    params = parameter_count(config)
    per_node = world_size // max(nnodes, 1)
    need = params * 4 * dtype_bytes / max(nnodes, 1) / GIB + PROCESS_OVERHEAD_GIB * per_node
    have = host_ram_gib() if ram_gib is None else ram_gib
    if have >= need:
        return None
    return (f"host RAM: {have:.0f} GiB, CPU offload of {params / 1e9:.2f}B parameters needs "
            f"~{need:.0f} GiB on this node ({4 * dtype_bytes} B per parameter + "
            f"~{PROCESS_OVERHEAD_GIB:g} GiB per process); use more nodes or a bigger host")
