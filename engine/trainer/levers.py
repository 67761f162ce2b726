"""The engine's performance levers (engine/ops), chosen from the `training.*` knobs.

`plan_levers` resolves the knobs for this device and process layout (the `auto` values, and the
fallbacks where a lever does not apply, each with a warning). `apply_levers` is the one entry
point, for the engine (engine/trainer/setup.py) and the bench (bench/bench_train.py):
- stage "structure", before sharding: flex attention, checkpointing of all decoder layers but the
  last N, expert LoRA (bench);
- stage "placed", once the model sits on its device: compile, token-chunked MoE blocks;
- stage "all": both, in that order (a model that is never sharded).
`fit_unchecked_after_first_step` (unchecked_layers: auto) then unchecks as many layers as the
card holds, from the first step's peak memory.
Measured on gpt-oss-20b shapes at 8192 tokens (README, performance section): compiled MoE blocks
+13 % tokens/s; 21 layers unchecked (fitted to an 80 GiB cap) 15,078 tok/s against 11,246.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from osstune.engine.plan.config import ConfigError, RunConfig
from osstune.engine.trainer.ops.compile import CompileTarget


@dataclass
class LeverPlan:
    checkpointing: bool
    unchecked_layers: int  # fixed count (0 when fitted after the first step)
    fit_unchecked: bool  # unchecked_layers: auto, resolved after the first step
    compile: CompileTarget | None
    moe_chunk_tokens: int | None
    warnings: list[str] = field(default_factory=list)
    attention: bool = False  # osstune_flex (the engine picks it with model.attn_implementation)
    offload_activations: bool = False  # checkpointed inputs kept in host memory
    expert_lora: tuple[int, float] | None = None  # (r, alpha): low-rank grouped GEMM experts


def apply_levers(model: nn.Module, plan: LeverPlan,
                 stage: Literal["structure", "placed", "all"] = "all") -> list[str]:
    """Switch the planned levers on for `model` (plain or PEFT) in place; one line per lever."""
    applied: list[str] = []
    if stage in ("structure", "all"):
        if plan.attention:
            from osstune.engine.trainer.ops import attention as attn

            name = attn.register()
            getattr(model, "get_base_model", lambda: model)().config._attn_implementation = name
            applied.append(f"attention: {name} (flex, fp32 sinks, block-sparse sliding, "
                           "documents)")
        applied += [line for line in [enable_checkpointing(model, plan)] if line]
        if plan.expert_lora is not None:
            from osstune.engine.trainer.ops.moe_lora import add_expert_lora

            r, alpha = plan.expert_lora
            params = add_expert_lora(model, r, alpha)
            applied.append(f"expert LoRA: r={r} alpha={alpha}, "
                           f"{sum(p.numel() for p in params)} parameters, low-rank grouped GEMMs")
    if stage in ("placed", "all"):
        applied += apply_block_levers(model, plan)
    return applied


def plan_levers(cfg: RunConfig, device: torch.device, world_size: int) -> LeverPlan:
    t = cfg.training
    cuda, sharded = device.type == "cuda", cfg.distributed.fsdp or world_size > 1
    warnings: list[str] = []

    fit = t.unchecked_layers == "auto" and t.gradient_checkpointing
    if fit and (not cuda or sharded):
        where = "under FSDP" if sharded else "on CPU"
        warnings.append(f"training.unchecked_layers: auto fits layers to one CUDA card; {where} "
                        "every layer stays checkpointed (unchecked_layers 0)")
        fit = False
    unchecked = t.unchecked_layers if isinstance(t.unchecked_layers, int) else 0

    target: CompileTarget | None = None
    if t.compile == "auto":
        # measured on one GPU only; compile under FSDP2 hooks is not measured. Packed experts
        # run uncompiled, their dequantize being one fused kernel of its own: 5,203 tok/s (bf16
        # compiled: 5,184) against 4,353 with the block compiled (measured before the fused
        # dequantize, 90 s of warm-up), 2048 tokens, gpt-oss-20b shapes, H200:
        # bench/results/2026-11-29-h200-mxfp4-run{1-cmp20b,2-24gb}.json
        target = "mlp" if cuda and not sharded and cfg.model.experts != "mxfp4" else None
    elif t.compile != "off":
        if cuda:
            target = t.compile
        else:
            warnings.append(f"training.compile: {t.compile} needs CUDA; running uncompiled on CPU")
    return LeverPlan(checkpointing=t.gradient_checkpointing, unchecked_layers=unchecked,
                     fit_unchecked=fit, compile=target, moe_chunk_tokens=t.moe_chunk_tokens,
                     warnings=warnings)


def enable_checkpointing(lm: nn.Module, plan: LeverPlan) -> str | None:
    """Checkpoint all decoder layers of `lm` (plain or PEFT) but the last `unchecked_layers`."""
    from osstune.engine.trainer.ops.checkpointing import checkpoint_layers, decoder_layers

    if not plan.checkpointing:
        return None
    total = len(decoder_layers(lm))
    if plan.unchecked_layers > total:
        raise ConfigError(f"training.unchecked_layers: {plan.unchecked_layers} is more than the "
                          f"model's {total} decoder layers")
    checked = checkpoint_layers(lm, plan.unchecked_layers, plan.offload_activations)
    return f"checkpointing: {checked} of {total} layers" + (
        ", inputs offloaded to host" if plan.offload_activations else "") + (
        " (more unchecked after the first step, to fill the card)" if plan.fit_unchecked else "")


def apply_block_levers(lm: nn.Module, plan: LeverPlan) -> list[str]:
    """torch.compile, then token-chunked MoE blocks (the order bench/bench_train.py measured;
    the compiled block calls the chunking forward, which is static for rows up to the chunk)."""
    from osstune.engine.trainer.ops.checkpointing import chunk_moe
    from osstune.engine.trainer.ops.compile import compile_blocks

    applied: list[str] = []
    if plan.compile is not None:
        count = compile_blocks(lm, plan.compile)
        applied.append(f"compile: {plan.compile} x{count}")
    if plan.moe_chunk_tokens is not None:
        chunk_moe(lm, plan.moe_chunk_tokens)
        applied.append(f"moe blocks: checkpointed chunks of {plan.moe_chunk_tokens} tokens "
                       "on longer rows")
    return applied


def fit_unchecked_after_first_step(lm: nn.Module, plan: LeverPlan, tokens: int) -> int | None:
    """unchecked_layers: auto on one CUDA card: uncheck the layers the first step left room for.

    `tokens`: tokens per micro-batch (micro_batch_size x sequence_len). None when not planned.
    """
    if not plan.fit_unchecked:
        return None
    from osstune.engine.trainer.ops.checkpointing import fit_unchecked_to_card

    plan.fit_unchecked = False
    # the per-layer bytes of the blocks as they run: uncompiled keeps more, chunked MoE blocks
    # (rows longer than moe_chunk_tokens) keep only their input (engine/plan/memory.py)
    return fit_unchecked_to_card(lm, tokens, moe_chunk=plan.moe_chunk_tokens,
                                 compiled=plan.compile is not None)
