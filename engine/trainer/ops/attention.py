"""Flex attention for GPT-OSS: learned sinks, block-sparse sliding windows, packed-row documents.

GPT-OSS attention is softmax over [scores, sink] per head with the sink column dropped. Flex
attention computes softmax over the scores alone plus their log-sum-exp (lse); adding the sink
to the normaliser afterwards is a per-row rescale:

    out_with_sink = out * exp(lse) / (exp(lse) + exp(sink)) = out * sigmoid(lse - sink)

done here in fp32 (transformers' stock flex path rounds the lse to bf16 before the rescale).
Gradients reach the sinks and, through the lse, the scores.

Masks are BlockMasks built once per forward from the position ids (which restart at 0 for every
packed example): causal, same document, and for sliding layers `q - kv < window`. With a 128-token
window each 128-row query block touches at most two key blocks, so sliding layers cost O(S) rather
than O(S^2).

The function is registered with transformers' AttentionInterface under `ATTN_IMPLEMENTATION`, with
transformers' flex mask builder as its mask function, so a model whose config selects it runs it
for every layer and stock callers (no explicit masks) still get correct BlockMasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention.flex_attention import (
    AuxRequest,
    BlockMask,
    create_block_mask,
    flex_attention,
)

ATTN_IMPLEMENTATION = "osstune_flex"
SLIDING = "sliding_attention"

_compiled_flex: Callable[..., Any] | None = None


def _flex() -> Callable[..., Any]:
    """flex_attention compiled once (uncompiled it falls back to dense reference math)."""
    global _compiled_flex
    if torch.compiler.is_compiling():
        return flex_attention  # already inside a compiled region (e.g. a compiled decoder layer)
    if _compiled_flex is None:
        # dynamic=None: fixed-length rows get static kernels; a run whose row lengths vary turns
        # dynamic after the first change instead of recompiling (and, past the recompile
        # limit, falling back to the dense uncompiled path)
        _compiled_flex = torch.compile(flex_attention, dynamic=None)
    return _compiled_flex


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, S] position ids restarting at 0 per packed example -> [B, S] example index per token."""
    return torch.cumsum((position_ids == 0).to(torch.int32), dim=-1)


def mask_mod(documents: torch.Tensor | None, sliding_window: int | None,
             ) -> Callable[..., torch.Tensor]:
    """The flex mask_mod: causal, same document, and inside the window when one is given.

    `documents=None` (one example per row) drops the per-element document lookups, which sliding
    layers would pay on every block (each of their blocks is partial).
    """

    def causal(b, h, q_idx, kv_idx):
        keep = q_idx >= kv_idx
        if sliding_window is not None:
            keep = keep & (q_idx - kv_idx < sliding_window)
        return keep

    if documents is None:
        return causal

    def causal_document(b, h, q_idx, kv_idx):
        keep = (q_idx >= kv_idx) & (documents[b, q_idx] == documents[b, kv_idx])
        if sliding_window is not None:
            keep = keep & (q_idx - kv_idx < sliding_window)
        return keep

    return causal_document


MASK_BLOCK = 128  # flex attention's default block size
# Eager mask building holds a dense B x S x S mask (and its int32 document lookups) for a moment.
# A bound chosen, not measured: up to 2^28 elements (1 GiB as int32, a transient on the card)
# it is built that way where compiling it can stall; above it the compiled build is used, whose
# stall has not been seen beyond the two lengths below.
EAGER_MASK_MAX_ELEMENTS = 1 << 28


def compiled_mask_build(batch: int, seq: int, is_cuda: bool) -> bool:
    """Whether `create_block_mask` is compiled (CUDA) or built eagerly (CPU, some lengths).

    Compiling it sorts the KV blocks of each query block; with torch 2.11 on an H200 that compile
    did not finish in minutes at 12,288- and 14,336-token rows (96 and 112 blocks), while
    2048-8192-token rows started promptly (bench/results/2026-11-29-h200-pack12288-mask-compile-
    stall.json; pytorch/pytorch#182060), as did 16,384, 65,536 and 131,072 (bench/calibration/
    h200-packed-16384-run3.json, h200-lean-65536.json, h200-lean-131072.json) and 20,480 (160
    blocks: h200-cli-lora-1gpu-auto20480.json). Which block
    counts stall is not known beyond those two, so every count but a power of two is built
    eagerly while the dense mask stays small: a conservative rule, not a measured boundary.
    """
    if not is_cuda:
        return False
    blocks = -(-seq // MASK_BLOCK)
    power_of_two = blocks & (blocks - 1) == 0
    return power_of_two or batch * seq * seq > EAGER_MASK_MAX_ELEMENTS


def block_masks(config: Any, position_ids: torch.Tensor, compile_mask: bool | None = None,
                ) -> dict[str, BlockMask]:
    """One BlockMask per GPT-OSS layer type, ready to pass as `attention_mask=` to GptOssModel.

    `compile_mask` (default: `compiled_mask_build`) builds the block structure without a dense
    S x S mask.
    """
    batch, seq = position_ids.shape
    # a host sync, once per step: a row holding a single example needs no document lookups
    packed = bool((position_ids[:, 1:] == 0).any())
    documents = document_ids(position_ids) if packed else None
    if compile_mask is None:
        compile_mask = compiled_mask_build(batch, seq, position_ids.is_cuda)
    masks: dict[str, BlockMask] = {}
    for layer_type in set(config.layer_types):
        window = config.sliding_window if layer_type == SLIDING else None
        masks[layer_type] = create_block_mask(
            mask_mod(documents, window), B=batch, H=None, Q_LEN=seq, KV_LEN=seq,
            device=position_ids.device, _compile=compile_mask)
    return masks


def sink_flex_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor, attention_mask: BlockMask | None,
                        scaling: float | None = None, dropout: float = 0.0,
                        s_aux: torch.Tensor | None = None, **_: Any,
                        ) -> tuple[torch.Tensor, None]:
    """AttentionInterface function: [B,H,S,D] q, [B,KV,S,D] k/v -> ([B,S,H,D], None)."""
    if dropout:
        raise ValueError("osstune flex attention: attention dropout is not supported; "
                         "set the model's attention_dropout to 0")
    if attention_mask is not None and not isinstance(attention_mask, BlockMask):
        raise TypeError("osstune flex attention needs BlockMask masks "
                        "(osstune.engine.trainer.ops.attention.block_masks); "
                        f" got {type(attention_mask).__name__}")
    run = _flex() if query.is_cuda else flex_attention  # CPU: the reference path (tests)
    out, aux = run(query, key, value, block_mask=attention_mask, scale=scaling,
                   enable_gqa=query.shape[1] != key.shape[1], return_aux=AuxRequest(lse=True))
    if s_aux is not None:
        sink = s_aux.float().view(1, -1, 1)
        out = (out.float() * torch.sigmoid(aux.lse - sink).unsqueeze(-1)).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `ATTN_IMPLEMENTATION` selectable (idempotent); returns the name to set on a config."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flex_attention_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, sink_flex_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, flex_attention_mask)
    return ATTN_IMPLEMENTATION
