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

from typing import Protocol, TypeVar

import torch

from osstune.engine.data.dataset import PAD_ID
from osstune.engine.plan.memory import OFFLOAD_PASS_TOKENS
from osstune.engine.trainer.objective import IGNORE_INDEX

# Tokens per merged pass: 8 rows of 2048 (the 20b offload recipe's step; the estimator sizes the
# activations of a pass from the same constant). A module attribute: bench/offload_worker.py
# sets it.
PASS_TOKENS = OFFLOAD_PASS_TOKENS


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

