"""AdamW (fused on the GPU where the states live there) and the learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from osstune.engine.plan.config import TrainingConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], training: TrainingConfig,
                    device: torch.device, states_on_cpu: bool) -> torch.optim.AdamW:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    kwargs = {"lr": training.learning_rate, "betas": (training.adam_beta1, training.adam_beta2),
              "weight_decay": training.weight_decay}
    # Offloaded states step on the CPU with torch's fused CPU kernel (one pass over each tensor,
    # parallel over all cores; 67M bf16 parameters on 2 threads: 0.26 s against 1.88 s for the
    # foreach path); on the GPU, fused when asked. The states take the parameters' dtype (bf16
    # for the real models).
    if states_on_cpu:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    if training.optimizer == "adamw_torch_fused" and device.type == "cuda":
        return torch.optim.AdamW(params, fused=True, **kwargs)
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int):
    """Multiplier of the base lr at scheduler step `s` (s optimizer steps done)."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant_with_warmup":
            return 1.0
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, training: TrainingConfig,
                    total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lr_lambda(training.lr_scheduler, training.warmup_steps, total_steps))
