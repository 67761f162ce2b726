"""AdamW (fused on the CPU, and on the GPU when asked) and the learning-rate schedules."""

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
    # States on the CPU (offloaded, or a CPU run) step with torch's fused CPU kernel (one pass
    # over each tensor, parallel over all cores; part of the demo's speed-up, README "demo-speed");
    # on the GPU, fused when asked. The states take the parameters' dtype (bf16 for the real
    # models).
    if states_on_cpu or device.type == "cpu" or training.optimizer == "adamw_torch_fused":
        return torch.optim.AdamW(params, fused=True, **kwargs)
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float,
                   optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The total gradient norm (a full tensor on every rank); gradients clipped to `max_norm`.

    For the fused AdamW over host-resident (CPU-offloaded) states the clip coefficient rides along
    the optimizer step as its `grad_scale` (the kernel divides each gradient as it reads it)
    instead of a separate multiply over every gradient: on the 8-layer 20b proxy that multiply
    took most of the 2.9 s the grad-norm clip cost per step (README, "CPU offload").
    """
    grads = [p.grad for p in params if p.grad is not None]
    folds = bool(optimizer.defaults.get("fused")) and bool(grads) and all(
        g.device.type == "cpu" for g in grads)
    if not folds:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    coef = torch.clamp(max_norm / (norm.float() + 1e-6), max=1.0)
    optimizer.grad_scale = 1.0 / coef  # type: ignore[attr-defined]
    return norm


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
