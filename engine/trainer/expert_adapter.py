"""Expert LoRA on packed MXFP4 experts: `lora.target_parameters` through ops/moe_lora.py.

peft's `target_parameters` forms W + BA on the bf16 expert weights, which packed experts do not
have; with `model.experts: mxfp4` the expert targets become low-rank grouped GEMMs beside the
packed ones instead (`add_expert_lora`). They are plain trainable parameters (checkpointed and
resumed with the attention adapters) and are exported next to the peft adapter as
`expert_adapter.safetensors` (r, alpha and targets in its metadata).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from osstune.engine.plan.config import LoraConfig
from osstune.engine.trainer.ops.moe_lora import TARGETS, add_expert_lora

FILE = "expert_adapter.safetensors"


def expert_targets(lora: LoraConfig) -> tuple[str, ...]:
    """`mlp.experts.gate_up_proj` / `gate_up_proj` ... -> ("gate_up_proj", ...)."""
    targets = []
    for name in lora.target_parameters:
        leaf = name.rpartition(".")[2]
        if leaf not in TARGETS:
            raise ValueError(f"lora.target_parameters: {name!r} is not an expert weight "
                             f"(packed experts take {', '.join(TARGETS)})")
        if leaf not in targets:
            targets.append(leaf)
    return tuple(targets)


def attach(model: nn.Module, lora: LoraConfig) -> list[nn.Parameter]:
    """Expert adapters on every experts module of `model` (B = 0: the model starts unchanged)."""
    targets = expert_targets(lora)
    return add_expert_lora(model, lora.r, lora.alpha, targets) if targets else []


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if ".osstune_lora." in n}


def _adapters(model: nn.Module) -> list[tuple[str, nn.Module, Any]]:
    return [(n, m, m.osstune_lora) for n, m in model.named_modules()
            if getattr(m, "osstune_lora", None) is not None]


def save(model: nn.Module, folder: Path) -> bool:
    """Write the expert adapters of `model` into `folder`; False when it has none."""
    from safetensors.torch import save_file

    from osstune.engine.trainer.objective import causal_lm

    model = causal_lm(model)  # names as in the bare GptOssForCausalLM the merge loads
    state = adapter_state(model)
    if not state:
        return False
    first = _adapters(model)[0][2]
    meta = {"r": str(first.r), "alpha": repr(first.scaling * first.r),
            "targets": ",".join(first.targets)}
    save_file({n: t.contiguous() for n, t in state.items()}, str(folder / FILE), metadata=meta)
    return True


def load(model: nn.Module, folder: Path) -> bool:
    """Attach and fill the expert adapters saved in `folder`; False when there are none."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = folder / FILE
    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    state = load_file(str(path))
    add_expert_lora(model, int(meta["r"]), float(meta["alpha"]),
                    tuple(meta["targets"].split(",")))
    missing, unexpected = model.load_state_dict(state, strict=False)[:2]
    expected = set(adapter_state(model))
    if unexpected or expected & set(missing):
        raise ValueError(f"{path}: does not match this model's experts "
                         f"({len(unexpected)} unexpected tensors)")
    return True


@torch.no_grad()
def merged_expert_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """`prefix.gate_up_proj` ... -> W + s A B [E, in, out] in the model's dtype for every adapted
    experts module (W dequantized from the packed blocks: exact), for a bf16 export."""
    from osstune.engine.trainer.hub_layout import dequantize

    weights = {}
    for prefix, experts, lora in _adapters(model):
        for name in lora.targets:
            base = dequantize(getattr(experts, f"{name}_blocks"),
                              getattr(experts, f"{name}_scales"), torch.float32).transpose(1, 2)
            dtype = experts.gate_up_proj_bias.dtype
            weights[f"{prefix}.{name}"] = (base + lora.delta(name)).to(dtype)
    return weights
