"""Performance levers for GPT-OSS training, one module per lever.

- `loss`: chunked linear cross-entropy (never the full [tokens, 201088] fp32 logits);
- `attention`: flex attention with fp32 sink rescale, block-sparse sliding windows, packed-row
  document masks (registered as transformers attention implementation `osstune_flex`);
- `checkpointing`: activation checkpointing on all but the last N decoder layers;
- `compile`: torch.compile of the MoE block or the whole decoder layer;
- `moe_lora`: LoRA on the expert weights as a low-rank grouped GEMM.

`engine/trainer/levers.py` (`apply_levers`) switches them on, for the engine and the bench alike.
The training step then builds its masks with `attention.block_masks(config, position_ids)` and its
loss with `loss.linear_cross_entropy(hidden, lm_head.weight, targets)`.
"""
