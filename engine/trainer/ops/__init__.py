"""Performance levers for GPT-OSS training, one module per lever.

- `loss`: chunked linear cross-entropy (never the full [tokens, 201088] fp32 logits);
- `attention`: flex attention with fp32 sink rescale, block-sparse sliding windows, packed-row
  document masks (registered as transformers attention implementation `osstune_flex`);
- `checkpointing`: activation checkpointing on all but the last N decoder layers;
- `compile`: torch.compile of the MoE block or the whole decoder layer;
- `moe_lora`: LoRA on the expert weights as a low-rank grouped GEMM.

`apply(model, ...)` switches them on for a built (optionally PEFT-wrapped) GptOssForCausalLM.
The training step then builds its masks with `attention.block_masks(config, position_ids)` and its
loss with `loss.linear_cross_entropy(hidden, lm_head.weight, targets)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from osstune.engine.trainer.ops.compile import CompileTarget


def apply(model: nn.Module, *, attention: bool = True, gradient_checkpointing: bool = True,
          unchecked_layers: int = 0, offload_activations: bool = False,
          compile: CompileTarget | None = None,
          expert_lora: tuple[int, float] | None = None) -> list[str]:
    """Switch the levers on for `model` in place; returns one line per lever applied.

    attention: use `osstune_flex` (CUDA; on CPU flex attention has no backward).
    gradient_checkpointing / unchecked_layers: checkpoint all decoder layers but the last N;
    offload_activations: keep the checkpointed inputs in host memory.
    compile: None, "mlp" or "layer" (torch.compile; CUDA).
    expert_lora: (r, alpha) to adapt the expert weights with low-rank grouped GEMMs (the new
    parameters require grad; save them with the model's state dict or merge them with
    `moe_lora.merge_expert_lora` before export: they are not PEFT modules).
    """
    from osstune.engine.trainer.ops import attention as attn
    from osstune.engine.trainer.ops.checkpointing import checkpoint_layers
    from osstune.engine.trainer.ops.compile import compile_blocks

    applied: list[str] = []
    lm = getattr(model, "get_base_model", lambda: model)()
    if attention:
        name = attn.register()
        lm.config._attn_implementation = name
        applied.append(f"attention: {name} (flex, fp32 sinks, block-sparse sliding, documents)")
    if gradient_checkpointing:
        checked = checkpoint_layers(model, unchecked_layers, offload_activations)
        applied.append(f"checkpointing: {checked} of {checked + unchecked_layers} layers"
                       + (", inputs offloaded to host" if offload_activations else ""))
    if expert_lora is not None:
        from osstune.engine.trainer.ops.moe_lora import add_expert_lora

        r, alpha = expert_lora
        params = add_expert_lora(model, r, alpha)
        applied.append(f"expert LoRA: r={r} alpha={alpha}, {sum(p.numel() for p in params)} "
                       "parameters, low-rank grouped GEMMs")
    if compile is not None:
        count = compile_blocks(model, compile)
        applied.append(f"compile: {compile} x{count}")
    return applied
