"""The training objective: hidden states -> summed token loss, without materialising full logits.

`CausalLMObjective` wraps the causal LM (plain or PEFT) so that the FSDP root owns the forward
that touches the embeddings, final norm and lm_head: its own forward gathers them once. The loss
is a *sum* over trained tokens; the train loop divides by the trained-token count of the whole
optimizer step (all micro-batches, all ranks).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from osstune.engine.trainer.ops.loss import IGNORE_INDEX, linear_cross_entropy


def shift_labels(labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """targets[t] = labels[t+1], except where t+1 starts a new packed example or is past the end."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    targets[:, :-1][position_ids[:, 1:] == 0] = IGNORE_INDEX
    return targets


def _mask_fn_kwargs(fn: Any) -> dict[str, Any]:
    # transformers renamed past_key_values -> cache; accept both so GPU images with another
    # 5.x release work.
    params = inspect.signature(fn).parameters
    return {"cache": None} if "cache" in params else {"past_key_values": None}


def attention_masks(config: Any, position_ids: torch.Tensor, dtype: torch.dtype) -> dict[str, Any]:
    """Per-layer-type masks that keep packed examples apart (block-diagonal causal, +window).

    GptOssModel builds its masks without the position ids, so packed rows would attend across
    example boundaries; building them here from the restarting position ids prevents that.
    """
    from osstune.engine.trainer.ops.attention import ATTN_IMPLEMENTATION, block_masks

    if config._attn_implementation == ATTN_IMPLEMENTATION:
        return block_masks(config, position_ids)  # block-sparse, built without an S x S mask
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    batch, seq = position_ids.shape
    shape_only = torch.empty((batch, seq, 1), dtype=dtype, device=position_ids.device)
    common = {"config": config, "inputs_embeds": shape_only, "attention_mask": None,
              "position_ids": position_ids}
    return {
        "full_attention": create_causal_mask(**common, **_mask_fn_kwargs(create_causal_mask)),
        "sliding_attention": create_sliding_window_causal_mask(
            **common, **_mask_fn_kwargs(create_sliding_window_causal_mask)),
    }


def causal_lm(model: nn.Module) -> nn.Module:
    """The GptOssForCausalLM inside a PEFT wrapper (LoRA layers already injected), or itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class CausalLMObjective(nn.Module):
    def __init__(self, lm: nn.Module, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.lm = lm
        self.compute_dtype = compute_dtype

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(loss summed over trained tokens fp32, trained-token count, router aux loss or None)."""
        base = causal_lm(self.lm)
        config = base.config
        masks = attention_masks(config, position_ids, self.compute_dtype)
        want_router = bool(getattr(config, "output_router_logits", False))
        out = base.model(input_ids=input_ids, position_ids=position_ids, attention_mask=masks,
                         use_cache=False, output_router_logits=want_router)
        hidden = out.last_hidden_state
        loss_sum, n_trained = linear_cross_entropy(
            hidden.reshape(-1, hidden.shape[-1]), base.lm_head.weight, targets.reshape(-1),
            ignore_index=IGNORE_INDEX)
        aux = None
        if want_router and getattr(out, "router_logits", None) is not None:
            from transformers.models.gpt_oss.modeling_gpt_oss import load_balancing_loss_func

            aux = load_balancing_loss_func(out.router_logits, config.num_local_experts,
                                           config.num_experts_per_tok, None)
        return loss_sum, n_trained, aux
