"""Activation checkpointing by layer: checkpoint only as many decoder layers as memory requires.

Full checkpointing re-runs every layer's forward during backward; with LoRA (no weight gradients
for the frozen base) that recompute is about a third of the step. A layer that is not checkpointed
keeps its activations instead (~172 KB per token for gpt-oss-20b LoRA, ~109 KB on rows
whose MoE blocks run chunked: engine/plan/memory.py), so leaving the
last `keep` layers unchecked trades memory for speed. Which layers does not change the peak (every
layer's saved tensors are live when backward starts); the last ones are freed first.
"""

from __future__ import annotations

from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a GptOssForCausalLM / GptOssModel / PEFT wrapper of one."""
    for name in ("base_model.model.model.layers", "model.layers", "layers"):
        node: object = model
        for part in name.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList):
            return node
    raise TypeError(f"no decoder layers found in {type(model).__name__}")


def checkpoint_layers(model: nn.Module, unchecked: int = 0, offload: bool = False) -> int:
    """Enable non-reentrant checkpointing on all decoder layers but the last `unchecked`.

    offload: keep the checkpointed layers' inputs in pinned host memory (layers x tokens x hidden
    bf16 bytes, 9 GiB at 64K tokens for gpt-oss-20b) at the cost of a copy each way.
    Returns the number of checkpointed layers.
    """
    layers = decoder_layers(model)
    if unchecked < 0 or unchecked > len(layers):
        raise ValueError(f"unchecked layers must be in 0..{len(layers)}, got {unchecked}")
    lm = getattr(model, "get_base_model", lambda: model)()
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.2x
        lm.activation_checkpointing_enable(kwargs, offload=offload)
    elif offload:
        raise ValueError("activation offload needs transformers' activation_checkpointing_enable")
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    checked = len(layers) - unchecked
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = index < checked
    return checked


def chunk_moe(model: nn.Module, tokens_per_chunk: int) -> int:
    """Run each MoE block over token chunks, each chunk checkpointed, for long sequences.

    The experts work on 4 routed rows per token of width up to 5760: at 64K tokens one MoE block's
    intermediates are tens of GiB. The block is token-wise, so splitting the tokens changes no
    result; checkpointing each chunk keeps only one chunk's intermediates alive, at the price of
    one more MoE forward. Sequences up to `tokens_per_chunk` run unchanged. Returns the count of
    blocks wrapped.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    if tokens_per_chunk < 1:
        raise ValueError(f"tokens_per_chunk must be positive, got {tokens_per_chunk}")
    layers = decoder_layers(model)
    for layer in layers:
        mlp = layer.mlp
        block_forward = getattr(mlp, "_osstune_unchunked_forward", mlp.forward)

        def forward(hidden_states, _block=block_forward):
            batch, seq, width = hidden_states.shape
            if batch * seq <= tokens_per_chunk or not torch.is_grad_enabled():
                return _block(hidden_states)
            flat = hidden_states.reshape(1, batch * seq, width)
            outs, scores = [], []
            for part in flat.split(tokens_per_chunk, dim=1):
                out, score = checkpoint(_block, part, use_reentrant=False)
                outs.append(out)
                scores.append(score)
            return torch.cat(outs, dim=1).reshape(batch, seq, width), torch.cat(scores)

        mlp._osstune_unchunked_forward = block_forward
        mlp.forward = forward
    return len(layers)


def lora_targets(model: nn.Module) -> tuple[str, ...] | None:
    """The attention modules a PEFT model adapts (None: not a PEFT model, every weight trains)."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    targets = getattr(next(iter(configs.values())), "target_modules", None) or ()
    return tuple(sorted(targets)) if not isinstance(targets, str) else (targets,)


def unchecked_layer_gib(model: nn.Module, tokens: int, compiled: bool = True,
                        moe_chunk: int | None = None) -> float:
    """Extra memory of one decoder layer left unchecked, for `tokens` tokens per micro-batch: the
    estimator's activation term (engine/plan/memory.py), from the model's own shapes, dtype and
    LoRA targets, and whether its MoE blocks run chunked at this length (`moe_chunk`), so
    `unchecked_layers: auto` here and the plan's estimate spend the same bytes."""
    from osstune.engine.plan.memory import moe_chunked, unchecked_extra_bytes_per_token
    from osstune.engine.plan.shapes import shapes_from_dict

    config = getattr(model, "config", None)
    values = config.to_dict() if hasattr(config, "to_dict") else {}
    if not values:  # a bare layer stack: the hidden size is all there is to go on
        hidden = int(getattr(decoder_layers(model)[0], "hidden_size", 2880))
        values = {"hidden_size": hidden, "intermediate_size": hidden, "num_hidden_layers": 1}
    param = next(model.parameters(), None)
    dtype_bytes = param.element_size() if param is not None else 2
    per_token = unchecked_extra_bytes_per_token(shapes_from_dict(values), dtype_bytes, compiled,
                                                lora_targets(model),
                                                moe_chunked(tokens, moe_chunk))
    return tokens * per_token / 1024**3


def unchecked_for_budget(model: nn.Module, tokens: int, budget_gib: float, peak_gib: float,
                         moe_chunk: int | None = None, compiled: bool = True) -> int:
    """How many layers can keep their activations within `budget_gib`.

    `peak_gib`: the peak measured for a step with every layer checkpointed (same row length);
    `compiled`: whether the MoE blocks run compiled (uncompiled ones keep more per token).
    """
    layers = decoder_layers(model)
    per_layer_gib = unchecked_layer_gib(model, tokens, compiled, moe_chunk)
    spare = max(0.0, budget_gib - peak_gib)
    return min(len(layers), int(spare // per_layer_gib))


def set_unchecked(model: nn.Module, unchecked: int) -> int:
    """Re-split an already enabled checkpointing: the last `unchecked` layers keep activations."""
    layers = decoder_layers(model)
    checked = len(layers) - max(0, min(unchecked, len(layers)))
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = index < checked
    return checked


def fit_unchecked_to_card(model: nn.Module, tokens: int, cap_gib: float | None = None,
                          headroom_gib: float = 4.0, moe_chunk: int | None = None,
                          compiled: bool = True) -> int:
    """Call after one fully checkpointed step on CUDA: uncheck as many layers as the card holds.

    Uses that step's peak reserved memory on the current device; `cap_gib` lowers the card size
    (e.g. a process memory cap). Returns the number of layers left unchecked.
    """
    import torch

    card = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 1024**3
    budget = min(card, cap_gib or card) - headroom_gib
    peak = torch.cuda.max_memory_reserved() / 1024**3
    unchecked = unchecked_for_budget(model, tokens, budget, peak, moe_chunk, compiled)
    set_unchecked(model, unchecked)
    return unchecked
