"""LoRA through peft: attention projections by default, expert weights via `target_parameters`."""

from __future__ import annotations

from torch import nn

from osstune.engine.plan.config import LoraConfig


def apply_lora(model: nn.Module, lora: LoraConfig) -> nn.Module:
    """A PeftModel whose only trainable parameters are the adapters.

    Packed MXFP4 experts take `target_parameters` as low-rank grouped GEMMs
    (engine/trainer/expert_adapter.py), attached after peft (which freezes everything else).
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    from osstune.engine.trainer.mxfp4 import is_packed

    packed = is_packed(model)
    extra = {}
    if lora.target_parameters and not packed:
        # Expert weights are 3-D parameters, not nn.Linear modules.
        extra["target_parameters"] = list(lora.target_parameters)
    peft_config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) or None, task_type="CAUSAL_LM", bias="none",
        **extra)
    peft_model = get_peft_model(model, peft_config)
    if packed:
        from osstune.engine.trainer import expert_adapter

        expert_adapter.attach(model, lora)
    return peft_model
