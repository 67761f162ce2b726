"""Packed MXFP4 experts (engine/trainer/mxfp4.py, hub_layout.py): the hub layout proven against
transformers' own dequantizer, packed training equal to the dequantized (bf16) path on the same
folder, and bad folders refused with one line naming the file and tensor.

Tolerance for packed vs bf16: fp32, the same weights summed in another order (stock experts add
with index_add_, the grouped path sums the k outputs in fp32): 1e-5 absolute / 1e-4 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from osstune.engine.plan.config import ConfigError, validate
from osstune.engine.trainer.hub_layout import (
    INDEX_FILE,
    dequantize,
    quantize_exact,
    random_hub_tensors,
    random_packed,
    write_hub_checkpoint,
)
from osstune.engine.trainer.model import ModelError, load_model_config, load_pretrained
from tests.engine_fixtures import TINY_ARCH

ARCH = {**TINY_ARCH, "hidden_size": 64, "intermediate_size": 64, "vocab_size": 512,
        "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def tiny_hub(folder: Path, seed: int = 0, arch: dict | None = None) -> Path:
    from transformers import GptOssConfig

    config = GptOssConfig(**(arch or ARCH))
    config.layer_types = ["sliding_attention", "full_attention"] * (config.num_hidden_layers // 2)
    return write_hub_checkpoint(folder, config.to_dict(), random_hub_tensors(config, seed),
                                shard_bytes=64 << 10)


def run_config(folder: Path, experts: str, **model: object):
    return validate({"model": {"id": str(folder), "dtype": "float32", "attn_implementation":
                               "eager", "experts": experts, **model},
                     "method": "lora", "distributed": {"gpus": 0},
                     "training": {"gradient_checkpointing": False}}, "test")


def load(folder: Path, experts: str):
    cfg = run_config(folder, experts)
    device = torch.device("cpu")
    return load_pretrained(cfg, load_model_config(cfg, device), device)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    return tiny_hub(tmp_path_factory.mktemp("mxfp4") / "hub")


def test_dequantize_matches_transformers_and_round_trips():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    gen = torch.Generator().manual_seed(0)
    blocks, scales = random_packed((3, 10, 4, 16), gen)
    mine = dequantize(blocks, scales, chunk_bytes=100)  # several chunks
    assert torch.equal(mine.transpose(1, 2), convert_moe_packed_tensors(blocks, scales))
    assert torch.equal(dequantize(*quantize_exact(mine)), mine)
    with pytest.raises(ValueError, match="not MXFP4 values"):
        quantize_exact(torch.full((1, 32), 0.3))


def test_hub_layout_names_shapes_and_transformers_reads_it(hub):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, Mxfp4Config
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    config = json.loads((hub / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    assert "lm_head" in config["quantization_config"]["modules_to_not_convert"]
    weight_map = json.loads((hub / INDEX_FILE).read_text())["weight_map"]
    assert len(set(weight_map.values())) > 1  # sharded
    e, h, i = ARCH["num_local_experts"], ARCH["hidden_size"], ARCH["intermediate_size"]
    prefix = "model.layers.1.mlp.experts."
    tensors = {}
    for name in ("gate_up_proj_blocks", "gate_up_proj_scales", "gate_up_proj_bias",
                 "down_proj_blocks", "down_proj_scales", "down_proj_bias"):
        with safe_open(str(hub / weight_map[prefix + name]), "pt") as f:
            tensors[name] = f.get_tensor(prefix + name)
    assert tensors["gate_up_proj_blocks"].shape == (e, 2 * i, h // 32, 16)
    assert tensors["gate_up_proj_scales"].shape == (e, 2 * i, h // 32)
    assert tensors["down_proj_blocks"].shape == (e, h, i // 32, 16)
    assert tensors["down_proj_blocks"].dtype == torch.uint8
    assert tensors["down_proj_bias"].dtype == torch.bfloat16
    assert "model.layers.0.self_attn.sinks" in weight_map

    stock = AutoModelForCausalLM.from_pretrained(
        str(hub), quantization_config=Mxfp4Config(dequantize=True), dtype=torch.bfloat16)
    experts = stock.model.layers[1].mlp.experts
    for name in ("gate_up_proj", "down_proj"):
        ref = convert_moe_packed_tensors(tensors[f"{name}_blocks"], tensors[f"{name}_scales"])
        assert torch.equal(getattr(experts, name), ref)
        assert torch.equal(ref, dequantize(tensors[f"{name}_blocks"],
                                           tensors[f"{name}_scales"]).transpose(1, 2))


def _lora_step(model, ids):
    from osstune.engine.trainer.lora import apply_lora
    from osstune.engine.trainer.ops.moe_lora import add_expert_lora

    torch.manual_seed(5)
    peft_model = apply_lora(model, run_config(Path("."), "bf16").lora)
    expert_params = add_expert_lora(model, r=4, alpha=8)  # after peft, which freezes the rest
    with torch.no_grad():
        for p in expert_params:
            p.normal_(std=0.2, generator=torch.Generator().manual_seed(p.numel()))
    logits = peft_model(input_ids=ids).logits
    logits.float().square().mean().backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def test_packed_logits_and_lora_grads_equal_bf16_path(hub):
    ids = torch.randint(3, 500, (2, 40), generator=torch.Generator().manual_seed(1))
    bf16_logits, bf16_grads = _lora_step(load(hub, "bf16"), ids)
    packed = load(hub, "mxfp4")
    assert not any(p.dtype == torch.uint8 for p in packed.parameters())
    experts = packed.model.layers[0].mlp.experts
    assert experts.gate_up_proj_blocks.dtype == torch.uint8 and not hasattr(
        experts, "gate_up_proj")
    from osstune.engine.trainer.model import count_params

    assert count_params(packed)[0] == count_params(load(hub, "bf16"))[0]  # experts counted
    packed_logits, packed_grads = _lora_step(packed, ids)
    torch.testing.assert_close(packed_logits, bf16_logits, atol=1e-5, rtol=1e-4)
    assert packed_grads.keys() == bf16_grads.keys()
    assert any("lora_A_gate_up_proj" in n for n in packed_grads)  # expert LoRA is trained too
    for name, grad in bf16_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4)


def test_packed_backward_redequantizes_under_checkpointing(hub):
    """Checkpointed recompute + the packed backward give the same grads as the plain path."""
    ids = torch.randint(3, 500, (1, 32), generator=torch.Generator().manual_seed(2))
    _, plain = _lora_step(load(hub, "mxfp4"), ids)
    model = load(hub, "mxfp4")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    _, checked = _lora_step(model, ids)
    for name, grad in plain.items():
        torch.testing.assert_close(checked[name], grad, atol=1e-6, rtol=1e-5)


def test_schema_refuses_full_finetuning_and_fsdp_with_packed_experts():
    base = {"model": {"id": "openai/gpt-oss-20b", "experts": "mxfp4"}}
    with pytest.raises(ConfigError, match="packed and frozen"):
        validate({**base, "method": "full"}, "run.yaml")
    with pytest.raises(ConfigError, match="needs lora.target_modules too"):
        validate({**base, "lora": {"target_parameters": ["mlp.experts.gate_up_proj"],
                                   "target_modules": []}}, "r.yaml")
    with pytest.raises(ConfigError, match="one process"):
        validate({**base, "distributed": {"gpus": 2, "fsdp": True}}, "run.yaml")
    with pytest.raises(ConfigError, match="model.experts"):
        validate({"model": {"id": "x", "experts": "nf4"}}, "run.yaml")


def _copy(hub: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(hub, dest))


def _rewrite_shard(folder: Path, tensor: str, change) -> str:
    from safetensors.torch import load_file, save_file

    file = json.loads((folder / INDEX_FILE).read_text())["weight_map"][tensor]
    state = load_file(str(folder / file))
    change(state)
    save_file(state, str(folder / file))
    return file


def truncate_in(folder: Path, tensor: str) -> str:
    """Cut the shard holding `tensor` one byte into that tensor's data; returns the file name."""
    file = json.loads((folder / INDEX_FILE).read_text())["weight_map"][tensor]
    data = (folder / file).read_bytes()
    header = int.from_bytes(data[:8], "little")
    start = json.loads(data[8:8 + header])[tensor]["data_offsets"][0]
    (folder / file).write_bytes(data[:8 + header + start + 1])
    return file


def test_bad_folders_refused_with_file_and_tensor(hub, tmp_path):
    name = "model.layers.1.mlp.experts.down_proj_scales"
    missing = _copy(hub, tmp_path / "missing")
    file = _rewrite_shard(missing, name, lambda s: s.pop(name))
    with pytest.raises(ModelError, match=rf"{file}: tensor {name} is listed .* not in the file"):
        load(missing, "mxfp4")

    shape = _copy(hub, tmp_path / "shape")
    file = _rewrite_shard(shape, name,
                          lambda s: s.__setitem__(name, s[name][:, :, :-1].contiguous()))
    with pytest.raises(ModelError, match=rf"{file}: tensor {name} has shape \[4, 64, 1\], "
                       r"config.json implies \[4, 64, 2\]"):
        load(shape, "mxfp4")

    truncated = _copy(hub, tmp_path / "truncated")
    file = truncate_in(truncated, name)
    with pytest.raises(ModelError, match=rf"{file}: tensor {name} runs past the end of the file "
                       r"\(truncated safetensors"):
        load(truncated, "mxfp4")
    (truncated / file).write_bytes(b"\x00" * 4)  # not even a header: the reader's own words
    with pytest.raises(ModelError, match=rf"{file}: cannot read safetensors \("):
        load(truncated, "mxfp4")

    unknown = _copy(hub, tmp_path / "unknown")
    config = json.loads((unknown / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "awq"
    (unknown / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="quant_method 'awq' is not supported"):
        load(unknown, "mxfp4")


def test_compile_auto_leaves_packed_experts_uncompiled():
    from osstune.engine.trainer.levers import plan_levers

    cuda = torch.device("cuda")
    packed = validate({"model": {"id": "x", "experts": "mxfp4"}}, "t")
    assert plan_levers(packed, cuda, 1).compile is None
    assert plan_levers(validate({"model": {"id": "x"}}, "t"), cuda, 1).compile == "mlp"
    packed.training.compile = "mlp"  # asked for explicitly: honoured
    assert plan_levers(packed, cuda, 1).compile == "mlp"
