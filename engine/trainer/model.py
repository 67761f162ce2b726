"""Build the GPT-OSS model a run config describes.

Three ways in:
- `init: random`: the architecture from its config (hub id, local folder, or the built-in shapes of
  the public checkpoints when no hub is reachable), built on the meta device. The caller shards it
  (FSDP) or not, then `materialize_random` gives each rank random values for its own shard only.
- `init: pretrained` without FSDP: `from_pretrained` with MXFP4 experts dequantized to bf16.
- `init: pretrained` with FSDP: every rank builds on meta, shards, then reads only its shard's
  slices of the safetensors (engine.trainer.sharded_load; MXFP4 experts dequantized per slice).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.shapes import cached_snapshot, is_local_model
from osstune.engine.trainer.safetensors_read import first_unreadable

# Shapes of the public checkpoints' config.json (openai/gpt-oss-20b and -120b), so that
# `init: random` works with no hub. Everything not listed is transformers' GptOssConfig
# default, which matches both.
BUILTIN_SHAPES: dict[str, dict[str, Any]] = {
    "openai/gpt-oss-20b": {"num_hidden_layers": 24, "num_local_experts": 32},
    "openai/gpt-oss-120b": {"num_hidden_layers": 36, "num_local_experts": 128},
}
_CHECKPOINT_DEFAULTS = {
    "router_aux_loss_coef": 0.9, "pad_token_id": 199999, "eos_token_id": 200002,
    "bos_token_id": 199998, "tie_word_embeddings": False,
}
ARCHITECTURE = "GptOssForCausalLM"


class ModelError(RuntimeError):
    """The configured model cannot be built or loaded; the message names the input."""


@dataclass
class ModelInfo:
    """What run_start reports about the model."""

    id: str
    init: str
    total_params: int
    trainable_params: int
    active_params: int  # per token: shared weights + top-k experts (for MFU)
    attn_implementation: str
    experts_implementation: str  # grouped_mm where the GPU/torch support it
    dtype: str
    levers: list[str] = field(default_factory=list)  # engine/levers.py: one line per lever

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_attn_implementation(requested: str, device: torch.device) -> str:
    """auto: osstune's flex attention with sinks on CUDA (engine.trainer.ops.attention), eager on
    CPU.

    GPT-OSS has no SDPA path (a request falls back to eager, which materialises S x S scores);
    flex attention has no CPU backward. `flex_attention` selects transformers' stock flex path.
    """
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "eager"
    from osstune.engine.trainer.ops.attention import register

    return register()


def _hub_config(model_id: str, trust_remote_code: bool) -> Any:
    """The cached copy first; the network only when the hub answers quickly (no retry storms)."""
    from transformers import AutoConfig

    from osstune.engine.data.tokenizer import hub_reachable

    try:
        return AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code,
                                          local_files_only=True)
    except Exception:
        if not hub_reachable():
            raise
    return AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code)


def load_model_config(cfg: RunConfig, device: torch.device) -> Any:
    """The transformers config with architecture overrides applied; raises ModelError."""
    from transformers import AutoConfig, GptOssConfig

    model_id = cfg.model.id
    base: Any = None
    if is_local_model(model_id):
        folder = Path(model_id).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"model {model_id}: no such model folder (expected {folder}/config.json)")
        try:
            base = AutoConfig.from_pretrained(
                str(folder), trust_remote_code=cfg.model.trust_remote_code)
        except Exception as e:  # transformers raises many kinds; the user needs one line
            raise ModelError(f"model {model_id}: cannot read config.json: {e}") from None
    else:
        try:
            base = _hub_config(model_id, cfg.model.trust_remote_code)
        except Exception as e:
            if model_id not in BUILTIN_SHAPES:
                raise ModelError(
                    f"model {model_id}: not a local folder, and the hub has no config for it "
                    f"({type(e).__name__}); give a local folder or a GPT-OSS hub id"
                ) from None
            if cfg.model.init == "pretrained":
                raise ModelError(
                    f"model {model_id}: weights are not in the local cache and the hub is "
                    "unreachable; download them first or use `model.init: random`"
                ) from None
            base = GptOssConfig(**_CHECKPOINT_DEFAULTS, **BUILTIN_SHAPES[model_id])
    if getattr(base, "model_type", None) != "gpt_oss":
        raise ModelError(f"model {model_id}: model_type {base.model_type!r} is not gpt_oss")

    config = copy.deepcopy(base)
    overrides = dict(cfg.model.architecture)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ModelError(f"model.architecture.{key}: unknown GPT-OSS config key")
        setattr(config, key, value)
    if "num_hidden_layers" in overrides and "layer_types" not in overrides:
        # Keep the alternation: sliding on even layers, full on odd.
        config.layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention"
                              for i in range(config.num_hidden_layers)]
    config.router_aux_loss_coef = cfg.model.router_aux_loss_coef
    config.output_router_logits = cfg.model.router_aux_loss_coef > 0
    config.use_cache = False
    config.architectures = [ARCHITECTURE]
    config._attn_implementation = resolve_attn_implementation(cfg.model.attn_implementation, device)
    return config


def torch_dtype(name: str) -> torch.dtype:
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def build_meta_model(config: Any, dtype: torch.dtype) -> nn.Module:
    """The architecture on the meta device: no memory, no init cost."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=config._attn_implementation)
    return model


def _mxfp4_quantized(config: Any) -> bool:
    quant = getattr(config, "quantization_config", None)
    method = (quant.get("quant_method") if isinstance(quant, dict)
              else getattr(quant, "quant_method", None))
    return str(method).lower().endswith("mxfp4")


def load_pretrained(cfg: RunConfig, config: Any, device: torch.device) -> nn.Module:
    """Full weights on `device`: MXFP4 experts dequantized to bf16 at load, or kept packed
    (`model.experts: mxfp4`, engine/trainer/mxfp4.py)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    if cfg.model.experts == "mxfp4":
        from osstune.engine.trainer.mxfp4 import load_packed

        model = load_packed(cfg, config, device)
        model.config.architectures = [ARCHITECTURE]
        return model

    kwargs: dict[str, Any] = {}
    if _mxfp4_quantized(config):
        from transformers import Mxfp4Config

        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            cfg.model.id, config=config, dtype=torch_dtype(cfg.model.dtype),
            attn_implementation=config._attn_implementation, device_map={"": device},
            trust_remote_code=cfg.model.trust_remote_code, **kwargs)
    except (OSError, SafetensorError) as e:
        raise ModelError(_load_failure(cfg.model.id, e)) from None
    model.config.architectures = [ARCHITECTURE]
    return model


def _load_failure(model_id: str, error: BaseException) -> str:
    """The line for a failed load: a cut-off file named when the folder holds one."""
    folder = Path(model_id).expanduser() if is_local_model(model_id) else cached_snapshot(model_id)
    cut = first_unreadable(model_id, folder, error) if folder is not None else None
    return cut or f"model {model_id}: cannot load weights: {type(error).__name__}: {error}"


def _is_norm_weight(name: str) -> bool:
    return name.endswith("norm.weight")


@torch.no_grad()
def materialize_random(model: nn.Module, device: torch.device, seed: int, rank: int = 0,
                       fill_device: torch.device | None = None) -> None:
    """Allocate `model` (meta, maybe sharded) on `device` and fill it like GPT-OSS's own init.

    Each rank fills only its local shard, from its own generator: no rank ever holds the whole
    model. Norm weights 1, biases 0 (router bias random, as upstream), the rest N(0, std).
    LoRA weights draw from a separate generator (B = 0), so the base weights are the same with or
    without adapters: `merge-lora` can rebuild a random base exactly. `fill_device` (a GPU)
    draws the numbers there when the shards live in host memory (CPU offload): much faster.
    """
    model.to_empty(device=device)
    fill = fill_device or device
    std = getattr(model.config, "initializer_range", 0.02)
    base_gen = torch.Generator(device=fill)
    base_gen.manual_seed(seed * 1_000_003 + rank)
    lora_gen = torch.Generator(device=fill)
    lora_gen.manual_seed(seed * 1_000_003 + rank + 500_009)
    for name, param in model.named_parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        if "lora_B" in name:
            local.zero_()
        elif "lora_" in name:
            _normal(local, std, lora_gen, fill)
        elif _is_norm_weight(name):
            local.fill_(1.0)
        elif name.endswith("bias") and not name.endswith("router.bias"):
            local.zero_()
        else:
            _normal(local, std, base_gen, fill)
    reset_rotary(model, fill)  # buffers live where the compute runs, also with offload


def _normal(target: torch.Tensor, std: float, gen: torch.Generator, fill: torch.device) -> None:
    if target.device == fill:
        target.normal_(0.0, std, generator=gen)
    else:
        target.copy_(torch.empty_like(target, device=fill).normal_(0.0, std, generator=gen))


def reset_rotary(model: nn.Module, device: torch.device) -> None:
    """Recompute rotary buffers (non-persistent: `to_empty` leaves them uninitialised)."""
    inner = getattr(model, "model", None)
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is None:
        return
    fresh = type(rotary)(config=model.config)
    inner.rotary_emb = fresh.to(device)


def count_params(model: nn.Module) -> tuple[int, int]:
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()  # DTensor numel is the global size
        total += n
        if p.requires_grad:
            trainable += n
    for name, buffer in model.named_buffers():
        if name.endswith("_proj_blocks"):  # packed MXFP4 experts: two weights per byte
            total += 2 * buffer.numel()
    return total, trainable


def active_params(config: Any, total: int) -> int:
    """Parameters one token passes through: all but the (E - k) experts it skips, per layer."""
    experts = config.num_local_experts
    per_expert = (config.hidden_size * 2 * config.intermediate_size + 2 * config.intermediate_size
                  + config.intermediate_size * config.hidden_size + config.hidden_size)
    skipped = (experts - config.num_experts_per_tok) * per_expert * config.num_hidden_layers
    return max(total - skipped, 0)


def hf_config_dict(config: Any) -> dict[str, Any]:
    """config.json content for an export: bf16/fp32 weights, never an FSDP class name."""
    data = json.loads(config.to_json_string(use_diff=False))
    data.pop("quantization_config", None)
    data["architectures"] = [ARCHITECTURE]
    data["use_cache"] = True
    data.pop("_attn_implementation_autoset", None)
    return data
