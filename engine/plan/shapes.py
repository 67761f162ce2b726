"""A GPT-OSS model's shapes and what follows from them: parameter counts, bytes on disk.

Torch-free: the estimator (engine/plan/estimate.py) works from these numbers alone. Shapes come
from the built-in public configs (gpt-oss-20b/120b), a local folder's `config.json` or the copy in
the Hugging Face cache, then `model.architecture` overrides; a key GPT-OSS does not have makes the
shapes unknown (`ShapeError`), never a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osstune.engine.plan.hardware import hf_cache_dir

# config.json of openai/gpt-oss-20b and openai/gpt-oss-120b (public); the same values as
# engine/trainer/model.py's BUILTIN_SHAPES on top of transformers' GptOssConfig defaults.
_COMMON: dict[str, Any] = {
    "vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "num_experts_per_tok": 4, "sliding_window": 128, "tie_word_embeddings": False,
}
BUILTIN: dict[str, dict[str, Any]] = {
    "openai/gpt-oss-20b": {**_COMMON, "num_hidden_layers": 24, "num_local_experts": 32},
    "openai/gpt-oss-120b": {**_COMMON, "num_hidden_layers": 36, "num_local_experts": 128},
}
# GptOssConfig keys that do not change memory or speed (accepted in model.architecture).
_NEUTRAL_KEYS = {
    "max_position_embeddings", "rms_norm_eps", "swiglu_limit", "attention_bias",
    "attention_dropout", "initializer_range", "output_router_logits", "router_aux_loss_coef",
    "pad_token_id", "eos_token_id", "bos_token_id", "rope_parameters", "rope_scaling",
    "rope_theta", "use_cache", "layer_types", "architectures", "model_type",
    "quantization_config", "torch_dtype", "dtype", "transformers_version", "experts_per_token",
    "num_experts", "initial_context_length",
}
KNOWN_KEYS = set(_COMMON) | {"num_hidden_layers", "num_local_experts"} | _NEUTRAL_KEYS
MXFP4_BYTES_PER_WEIGHT = 17 / 32  # 4-bit E2M1 codes + one E8M0 scale byte per 32 weights


class ShapeError(ValueError):
    """The model's shapes cannot be known; the message says which input."""


@dataclass(frozen=True)
class ModelShapes:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    experts_per_tok: int
    sliding_window: int | None
    sliding_layers: int  # layers with a sliding window; the rest attend to the whole row
    tied_embeddings: bool

    @property
    def attn_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def attention_params(self) -> int:
        h, q, kv = self.hidden, self.attn_width, self.kv_width
        return h * q + q + 2 * (h * kv + kv) + q * h + h + self.heads  # + sinks

    def expert_weights(self) -> int:
        """Expert matrices of one layer (gate_up and down): what MXFP4 packs."""
        return self.experts * 3 * self.hidden * self.intermediate

    def largest_expert_projection(self) -> int:
        """Weights of one layer's larger expert projection (gate_up: E x 2I x H), the most that
        packed experts hold dequantized at once."""
        return self.experts * self.hidden * self.intermediate * 2

    def layer_params(self) -> int:
        e, h, i = self.experts, self.hidden, self.intermediate
        router = h * e + e
        expert_bias = e * (2 * i + h)
        return self.attention_params() + router + self.expert_weights() + expert_bias + 2 * h

    def root_params(self) -> int:
        """Embeddings, lm_head and the final norm (FSDP's root group)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden

    def total_params(self) -> int:
        return self.layers * self.layer_params() + self.root_params()

    def active_params(self) -> int:
        skipped = (self.experts - self.experts_per_tok) * (
            3 * self.hidden * self.intermediate + 2 * self.intermediate + self.hidden)
        return self.total_params() - skipped * self.layers

    def weight_bytes(self, dtype_bytes: int, packed_experts: bool) -> float:
        experts = self.layers * self.expert_weights()
        per_expert = MXFP4_BYTES_PER_WEIGHT if packed_experts else dtype_bytes
        return (self.total_params() - experts) * dtype_bytes + experts * per_expert

    def mxfp4_checkpoint_bytes(self) -> float:
        """The hub checkpoint: experts MXFP4, everything else bf16."""
        return self.weight_bytes(2, packed_experts=True)

    def lora_params(self, r: int, modules: list[str], parameters: list[str]) -> int:
        """Trainable LoRA parameters: r x (in + out) per targeted matrix per layer."""
        h, q, kv, i, e = (self.hidden, self.attn_width, self.kv_width, self.intermediate,
                          self.experts)
        dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "router": (h, e)}
        per_layer = sum(r * sum(dims[m]) for m in modules if m in dims)
        expert_dims = {"gate_up_proj": (h, 2 * i), "down_proj": (i, h)}
        for name in parameters:
            key = name.rsplit(".", 1)[-1]
            if key in expert_dims:  # peft's ParamWrapper: one rank-r pair per expert
                per_layer += r * e * sum(expert_dims[key])
        return per_layer * self.layers

    def as_flops_config(self) -> dict[str, Any]:
        """The dict engine/plan/flops.py counts with."""
        full = self.layers - self.sliding_layers
        return {
            "hidden_size": self.hidden, "head_dim": self.head_dim,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
            "num_local_experts": self.experts, "num_experts_per_tok": self.experts_per_tok,
            "intermediate_size": self.intermediate, "num_hidden_layers": self.layers,
            "vocab_size": self.vocab, "sliding_window": self.sliding_window,
            "layer_types": ["sliding_attention"] * self.sliding_layers
            + ["full_attention"] * full,
        }


def cached_snapshot(model_id: str) -> Path | None:
    """The snapshot of `model_id` in the local Hugging Face cache that a load would use: the one
    `refs/main` names (as huggingface_hub resolves it), else the newest, else None."""
    if "/" not in model_id:
        return None
    repo = hf_cache_dir() / f"models--{model_id.replace('/', '--')}"
    try:
        main = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        main = ""
    if main and (repo / "snapshots" / main).is_dir():
        return repo / "snapshots" / main
    try:
        found = [p for p in (repo / "snapshots").iterdir() if p.is_dir()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def is_local_model(model_id: str) -> bool:
    """A path (starts with . / ~, or names a folder) rather than a hub id."""
    return model_id.startswith((".", "/", "~")) or Path(model_id).expanduser().is_dir()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ShapeError(f"no estimate: {path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise ShapeError(f"no estimate: {path}: not a JSON object")
    return data


def base_config(model_id: str) -> dict[str, Any]:
    if is_local_model(model_id):
        return _read_config(Path(model_id).expanduser() / "config.json")
    if model_id in BUILTIN:
        return dict(BUILTIN[model_id])
    snapshot = cached_snapshot(model_id)
    if snapshot is not None and (snapshot / "config.json").is_file():
        return _read_config(snapshot / "config.json")
    raise ShapeError(f"no estimate: model {model_id}: shapes unknown (not a built-in GPT-OSS id, "
                     "not a local folder, not in the Hugging Face cache)")


def _int(values: dict[str, Any], key: str) -> int:
    value = values.get(key, _COMMON.get(key))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ShapeError(f"no estimate: {key}: expected a whole number >= 1, got {value!r}")
    return value


def shapes_from_dict(values: dict[str, Any]) -> ModelShapes:
    layers = _int(values, "num_hidden_layers")
    window = values.get("sliding_window", _COMMON["sliding_window"])
    types = values.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        sliding = sum(1 for t in types if t == "sliding_attention")
    else:  # GPT-OSS alternates: sliding on even layers, full on odd
        sliding = (layers + 1) // 2
    return ModelShapes(
        vocab=_int(values, "vocab_size"), hidden=_int(values, "hidden_size"),
        intermediate=_int(values, "intermediate_size"), layers=layers,
        heads=_int(values, "num_attention_heads"), kv_heads=_int(values, "num_key_value_heads"),
        head_dim=_int(values, "head_dim"), experts=_int(values, "num_local_experts"),
        experts_per_tok=_int(values, "num_experts_per_tok"),
        sliding_window=window if isinstance(window, int) and window > 0 else None,
        sliding_layers=sliding if window else 0,
        tied_embeddings=bool(values.get("tie_word_embeddings", False)),
    )


def model_shapes(model_id: str, architecture: dict[str, Any]) -> ModelShapes:
    """Shapes of `model_id` with `model.architecture` overrides; ShapeError when unknown."""
    unknown = sorted(k for k in architecture if k not in KNOWN_KEYS)
    if unknown:
        raise ShapeError(f"no estimate: model.architecture.{unknown[0]}: unknown GPT-OSS config "
                         "key (the estimator models GPT-OSS shapes only)")
    values = {**base_config(model_id), **architecture}
    if "num_hidden_layers" in architecture and "layer_types" not in architecture:
        values.pop("layer_types", None)
    return shapes_from_dict(values)
