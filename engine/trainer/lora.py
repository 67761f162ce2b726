"""LoRA through peft: attention projections by default, expert weights via `target_parameters`."""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from osstune.engine.plan.config import LoraConfig

ADAPTER = "default"  # peft's adapter name, as PeftModel.from_pretrained names it


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
    with warnings.catch_warnings():
        # PeftModel's constructor reads transformers' deprecated `is_gradient_checkpointing`
        # (peft 0.21); training keeps the PeftModel (its names are the checkpoints' names), so
        # this one warning of this one call is silenced. Loading for merge/chat avoids it.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        peft_model = get_peft_model(model, peft_config)
    if packed:
        from osstune.engine.trainer import expert_adapter

        expert_adapter.attach(model, lora)
    return peft_model


def load_adapter(model: nn.Module, adapter_dir: Path) -> nn.Module:
    """`model` with the saved adapter injected and loaded, as peft's `LoraModel` (merge with
    `.merge_and_unload()`; `.model` is the model with its LoRA layers in place).

    What `PeftModel.from_pretrained` builds, without the wrapper: its constructor reads
    transformers' deprecated `is_gradient_checkpointing` (a FutureWarning on every merge and
    chat) to prepare training we do not do here. ModelError when the adapter does not fit."""
    from peft import PeftConfig, load_peft_weights, set_peft_model_state_dict
    from peft.tuners.lora import LoraModel

    from osstune.engine.trainer.model import ModelError

    config = PeftConfig.from_pretrained(str(adapter_dir))
    config.inference_mode = True
    tuner = LoraModel(model, config, ADAPTER)
    tuner._cast_adapter_dtype(adapter_name=ADAPTER, autocast_adapter_dtype=True)  # as peft does
    result = set_peft_model_state_dict(tuner.model, load_peft_weights(str(adapter_dir)),
                                       adapter_name=ADAPTER)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        names = (result.unexpected_keys or missing)[:2]
        raise ModelError(f"{adapter_dir}: the adapter does not fit the run's model "
                         f"({len(result.unexpected_keys)} unexpected, {len(missing)} missing "
                         f"adapter tensors, e.g. {', '.join(names)})")
    return tuner
