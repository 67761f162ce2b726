"""Model shapes and measured variants of bench/bench_train.py (its table of what a run compares).

Imported through `bench_train`, which re-exports these names (bench/ is the script directory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Public config.json of openai/gpt-oss-20b.
# The default device-memory cap of bench runs: an 80 GB H100's usable 79.1 GiB.
CAP_80GB_GIB = 79.1

GPT_OSS_20B: dict[str, Any] = {
    "vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880,
    "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "num_local_experts": 32, "num_experts_per_tok": 4, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "swiglu_limit": 7.0,
    "attention_bias": True, "attention_dropout": 0.0, "tie_word_embeddings": False,
    "initializer_range": 0.02, "output_router_logits": False, "router_aux_loss_coef": 0.9,
    "pad_token_id": 199999, "eos_token_id": 200002,
    "rope_parameters": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                        "truncate": False, "original_max_position_embeddings": 4096,
                        "rope_theta": 150000.0},
}
GPT_OSS_120B: dict[str, Any] = {**GPT_OSS_20B, "num_hidden_layers": 36, "num_local_experts": 128,
                                "layer_types": ["sliding_attention", "full_attention"] * 18}
# A few-MB model with the same structure, for checking the harness on CPU.
TINY: dict[str, Any] = {
    **GPT_OSS_20B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 8,
    "layer_types": ["sliding_attention", "full_attention"], "max_position_embeddings": 4096,
    "pad_token_id": 0, "eos_token_id": 1,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
}


@dataclass(frozen=True)
class Variant:
    attn: str = "eager"            # eager | flex_attention | osstune
    loss: str = "stock"            # stock (model(labels=...)) | chunked (engine.trainer.ops.loss)
    unchecked: int = 0             # decoder layers left unchecked; -1: as many as fit the card
    compile: str | None = None     # None | mlp | layer
    moe_chunk: int | None = None   # token chunk for checkpointed MoE blocks on long rows
    offload: bool = False          # checkpointed layer inputs in pinned host memory
    expandable: bool = False       # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    packed: bool = False           # MXFP4 experts kept packed (bench/bench_mxfp4.py builds it)
    expert_lora: bool = False      # + LoRA r=8 on the experts (packed variants only)
    cap_gib: float | None = None   # this variant's memory cap (else --cap-gib)


# lean: every layer checkpointed (least memory); osstune: as many layers as fit keep activations
LEAN = Variant(attn="osstune", loss="chunked", compile="mlp", moe_chunk=16384, expandable=True)
OSSTUNE = Variant(**{**asdict(LEAN), "unchecked": -1})
VARIANTS: dict[str, Variant] = {
    "eager": Variant(attn="eager"),
    "flex": Variant(attn="flex_attention"),
    "osstune": OSSTUNE,
    "osstune-lean": LEAN,
    # one lever at a time on top of stock flex, then the combinations
    "lever-loss": Variant(attn="flex_attention", loss="chunked"),
    "lever-loss+attn": Variant(attn="osstune", loss="chunked"),
    "lever-loss+attn+alloc": Variant(attn="osstune", loss="chunked", expandable=True),
    "lever-loss+attn+compile": Variant(attn="osstune", loss="chunked", compile="mlp"),
    "lever-lean+unchecked6": Variant(**{**asdict(LEAN), "unchecked": 6}),
    "lever-lean+compile-layer": Variant(**{**asdict(LEAN), "compile": "layer"}),
    "lever-osstune+compile-layer": Variant(**{**asdict(OSSTUNE), "compile": "layer"}),
    "osstune-offload": Variant(**{**asdict(OSSTUNE), "offload": True}),
    # unchecked layers on rows past the MoE chunk (chunk_moe checkpoints their MoE blocks too)
    "lever-chunked+unchecked6": Variant(**{**asdict(LEAN), "compile": None, "unchecked": 6}),
    "packed-lean": Variant(**{**asdict(LEAN), "packed": True}),
    "packed-lean-eager": Variant(**{**asdict(LEAN), "packed": True, "compile": None}),
    "packed-lean+expert-lora": Variant(**{**asdict(LEAN), "packed": True, "expert_lora": True}),
    # what a 24 GB card (RTX 3090/4090: 23.99 GiB total, ~23.5 usable) runs
    "packed-24gb": Variant(**{**asdict(LEAN), "packed": True, "compile": None, "cap_gib": 23.5}),
    "packed-24gb+expert-lora": Variant(**{**asdict(LEAN), "packed": True, "compile": None,
                                         "cap_gib": 23.5, "expert_lora": True}),
}
