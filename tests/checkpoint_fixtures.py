"""Tiny GPT-OSS checkpoints on disk in the hub's layout: sharded safetensors + index json, bf16,
optionally with MXFP4 experts (uint8 `*_blocks` [E, out, in/32, 16] + `*_scales` [E, out, in/32])
and the hub's `quantization_config`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.engine_fixtures import TINY_ARCH

CHECKPOINT_DEFAULTS = {"router_aux_loss_coef": 0.9, "pad_token_id": 199999,
                       "eos_token_id": 200002, "bos_token_id": 199998,
                       "tie_word_embeddings": False}
MXFP4_CONFIG = {"quant_method": "mxfp4",
                "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"]}


def _pack(weight: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random MXFP4 blocks and scales for a bf16 expert weight [E, in, out] (values ignored)."""
    experts, fan_in, fan_out = weight.shape
    groups = fan_in // 32
    blocks = torch.randint(0, 256, (experts, fan_out, groups, 16), generator=gen,
                           dtype=torch.uint8)
    scales = torch.randint(118, 124, (experts, fan_out, groups), generator=gen, dtype=torch.uint8)
    return blocks, scales


def write_tiny_checkpoint(folder: Path, mxfp4: bool = False, files: int = 3,
                          seed: int = 0) -> Path:
    """A random tiny GPT-OSS in `files` safetensors shards with an index; returns the folder."""
    from transformers import AutoModelForCausalLM, GptOssConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = GptOssConfig(**CHECKPOINT_DEFAULTS, **TINY_ARCH)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    if mxfp4:
        for name in [k for k in state if k.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
            blocks, scales = _pack(state.pop(name), gen)
            state[name + "_blocks"], state[name + "_scales"] = blocks, scales
    names = sorted(state)
    weight_map: dict[str, str] = {}
    for i in range(files):
        part = names[i::files]
        file = f"model-{i + 1:05d}-of-{files:05d}.safetensors"
        save_file({n: state[n] for n in part}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    data = json.loads(config.to_json_string(use_diff=False))
    data["architectures"] = ["GptOssForCausalLM"]
    if mxfp4:
        data["quantization_config"] = MXFP4_CONFIG
    (folder / "config.json").write_text(json.dumps(data), encoding="utf-8")
    return folder
