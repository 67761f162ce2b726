"""LoRA on GPT-OSS expert weights as low-rank grouped GEMMs, never materialising W + BA.

The experts hold stacked weights gate_up_proj [E, H, 2I] and down_proj [E, I, H]. peft's
`target_parameters` adapts them by forming the full delta (B A per expert, the size of the
weights: about 1.5 GB per gpt-oss-20b layer in bf16) on every forward and its gradient on every
backward. Here the adapter is applied to the routed rows instead:

    y = x W_e + s (x A_e) B_e + b_e        for the rows x routed to expert e

where A_e [in, r] and B_e [r, out] are run as two more grouped GEMMs over the same expert offsets
as the base one: 2 r (in + out) FLOPs per row, and no weight-sized tensor ever exists.

`add_expert_lora(model, r, alpha)` attaches an `ExpertLoRA` (parameters `lora_A_<name>`,
`lora_B_<name>`, B zero-initialised so the model starts unchanged) to every GptOssExperts module,
freezes the base expert weights and routes the experts' forward through `lora_experts_forward`.
`merge_expert_lora(model)` folds the adapters into the weights (export) and removes them.

The same forward runs packed MXFP4 experts (engine/trainer/mxfp4.py: `<name>_blocks` /
`<name>_scales` buffers instead of the bf16 weight): `PackedGroupedMM` dequantizes a projection's
experts just in time, in the forward and again in the backward (the weights are frozen, so nothing
weight-sized is saved for the backward), with or without adapters.
"""

from __future__ import annotations

import math
from types import MethodType
from typing import Any

import torch
from torch import nn

TARGETS = ("gate_up_proj", "down_proj")


def _grouped_mm(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """rows of `x` sorted by expert, `weight` [E, in, out], `offsets` cumulative row counts."""
    grouped = getattr(torch.nn.functional, "grouped_mm", None) or getattr(torch, "_grouped_mm",
                                                                          None)
    if grouped is not None and x.is_cuda and x.dtype == torch.bfloat16:
        return grouped(x, weight.to(x.dtype), offs=offsets)
    # CPU / fp32: one matmul per expert (CPU grouped_mm lacks fp32 and weight gradients)
    counts = torch.diff(offsets, prepend=offsets.new_zeros(1)).tolist()
    parts = [chunk @ weight[e].to(x.dtype) for e, chunk in enumerate(x.split(counts))]
    rows = int(offsets[-1]) if len(counts) else 0
    out = torch.cat(parts) if parts else x.new_zeros(0, weight.shape[-1])
    if rows < x.shape[0]:  # rows past the last offset belong to no expert
        out = torch.cat([out, out.new_zeros(x.shape[0] - rows, out.shape[1])])
    return out


class PackedGroupedMM(torch.autograd.Function):
    """x @ W_e for MXFP4 experts: W dequantized ([E, out, in], exact) for each use and freed."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor,
                offsets: torch.Tensor) -> torch.Tensor:
        from osstune.engine.trainer.hub_layout import dequantize

        ctx.save_for_backward(blocks, scales, offsets)
        return _grouped_mm(x, dequantize(blocks, scales, x.dtype).transpose(1, 2), offsets)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from osstune.engine.trainer.hub_layout import dequantize

        blocks, scales, offsets = ctx.saved_tensors
        grad = grad.contiguous()
        return _grouped_mm(grad, dequantize(blocks, scales, grad.dtype), offsets), None, None, None


def weight_shape(experts: nn.Module, name: str) -> tuple[torch.Size, torch.device]:
    """[E, in, out] of a bf16 or packed expert projection, and where it lives."""
    blocks = getattr(experts, f"{name}_blocks", None)
    if blocks is not None:  # [E, out, in / 32, 16]
        num, fan_out, groups, half = blocks.shape
        return torch.Size((num, groups * half * 2, fan_out)), blocks.device
    weight = getattr(experts, name)
    return weight.shape, weight.device


def expert_matmul(experts: nn.Module, name: str, x: torch.Tensor, offsets: torch.Tensor
                  ) -> torch.Tensor:
    """x @ W_e (+ s (x A_e) B_e with an adapter) for rows grouped by expert."""
    blocks = getattr(experts, f"{name}_blocks", None)
    if blocks is not None:
        out = PackedGroupedMM.apply(x, blocks, getattr(experts, f"{name}_scales"), offsets)
    else:
        out = _grouped_mm(x, getattr(experts, name), offsets)
    lora: Any = getattr(experts, "osstune_lora", None)
    if lora is not None and name in lora.targets:
        low = _grouped_mm(x, getattr(lora, f"lora_A_{name}"), offsets)
        out = out + lora.scaling * _grouped_mm(low, getattr(lora, f"lora_B_{name}"), offsets)
    return out


class ExpertLoRA(nn.Module):
    """Per-expert low-rank adapters for the stacked expert weights."""

    def __init__(self, experts: nn.Module, r: int, alpha: float,
                 targets: tuple[str, ...] = TARGETS) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"expert LoRA rank must be positive, got {r}")
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"expert LoRA targets must be among {TARGETS}, got {unknown}")
        self.r, self.scaling, self.targets = r, alpha / r, tuple(targets)
        for name in self.targets:
            (num, fan_in, fan_out), device = weight_shape(experts, name)
            a = torch.empty(num, fan_in, r, device=device, dtype=torch.float32)
            for e in range(num):  # the usual LoRA init: A ~ kaiming-uniform, B = 0
                nn.init.kaiming_uniform_(a[e].t(), a=math.sqrt(5))
            self.register_parameter(f"lora_A_{name}", nn.Parameter(a))
            self.register_parameter(f"lora_B_{name}", nn.Parameter(
                torch.zeros(num, r, fan_out, device=device, dtype=torch.float32)))

    def delta(self, name: str) -> torch.Tensor:
        """The full weight delta s A_e B_e (for merging only)."""
        return self.scaling * torch.bmm(getattr(self, f"lora_A_{name}"),
                                        getattr(self, f"lora_B_{name}"))


def lora_experts_forward(self: nn.Module, hidden_states: torch.Tensor,
                         router_indices: torch.Tensor, routing_weights: torch.Tensor,
                         ) -> torch.Tensor:
    """GptOssExperts.forward as grouped GEMMs, with `self.osstune_lora` applied inside them
    when present, over bf16 or packed MXFP4 weights.

    hidden_states [T, H]; router_indices / routing_weights [T, k] -> [T, H].
    """
    tokens, top_k = router_indices.shape
    expert_ids, order = torch.sort(router_indices.reshape(-1))
    rows = hidden_states[order // top_k]  # [T*k, H], grouped by expert
    counts = torch.bincount(expert_ids, minlength=self.num_experts)
    offsets = torch.cumsum(counts, dim=0).to(torch.int32)

    gate_up = expert_matmul(self, "gate_up_proj", rows, offsets)
    gate_up = gate_up + self.gate_up_proj_bias[expert_ids].to(gate_up.dtype)
    act = self._apply_gate(gate_up)  # GPT-OSS clamped SwiGLU over interleaved gate/up columns
    down = expert_matmul(self, "down_proj", act, offsets)
    down = down + self.down_proj_bias[expert_ids].to(down.dtype)
    down = down * routing_weights.reshape(-1)[order].unsqueeze(-1).to(down.dtype)
    # back to token order, then sum the k expert outputs of each token: deterministic, and the
    # sum runs in fp32 (index_add_ would accumulate in bf16 with atomics)
    unsort = torch.empty_like(order)
    unsort[order] = torch.arange(order.numel(), device=order.device)
    out = down[unsort].view(tokens, top_k, -1).float().sum(dim=1)
    return out.to(hidden_states.dtype)


def _experts_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "GptOssExperts"]


def add_expert_lora(model: nn.Module, r: int, alpha: float,
                    targets: tuple[str, ...] = TARGETS) -> list[nn.Parameter]:
    """Attach adapters to every GptOssExperts in `model`; returns the new trainable parameters."""
    modules = _experts_modules(model)
    if not modules:
        raise TypeError(f"no GptOssExperts modules in {type(model).__name__}")
    params: list[nn.Parameter] = []
    for experts in modules:
        for name in ("gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias"):
            if isinstance(getattr(experts, name, None), nn.Parameter):  # packed: buffers
                getattr(experts, name).requires_grad_(False)
        experts.osstune_lora = ExpertLoRA(experts, r, alpha, targets)
        experts.forward = MethodType(lora_experts_forward, experts)
        params.extend(experts.osstune_lora.parameters())
    return params


@torch.no_grad()
def merge_expert_lora(model: nn.Module) -> int:
    """Fold every expert adapter into its weights and restore the stock forward; returns count."""
    merged = 0
    for experts in _experts_modules(model):
        lora: Any = getattr(experts, "osstune_lora", None)
        if lora is None:
            continue
        for name in lora.targets:
            weight = getattr(experts, name)
            weight.add_(lora.delta(name).to(weight.dtype))
        del experts.osstune_lora
        del experts.forward  # back to the class's forward
        merged += 1
    return merged
