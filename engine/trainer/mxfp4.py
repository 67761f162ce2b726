"""`model.experts: mxfp4`: GPT-OSS with its expert weights kept packed as shipped.

Each GptOssExperts keeps `gate_up_proj_blocks/_scales` and `down_proj_blocks/_scales` (uint8, the
hub's layout and names: 4.25 bits per weight) as buffers instead of the bf16 `gate_up_proj` /
`down_proj` parameters; the experts' forward (ops/moe_lora.py) dequantizes one projection's
experts just in time, in the forward, the checkpointed recompute and the backward, and frees them.
The values are exact, so training sees the same weights as the dequantized (`bf16`) path.

The buffers are not persistent: LoRA checkpoints hold adapters only, as with bf16 experts.

- `pack_experts(model)`: swap the expert weights of a (meta) model for packed buffers;
- `load_packed(cfg, config, device)`: stream a hub-layout folder shard by shard onto `device`,
  checking every tensor against the config (one line naming the file and tensor otherwise);
- `fill_random_packed(model, seed)`: random packed experts for `init: random` (bench, tests);
- `save_hub_model(model, tokenizer, folder)`: write it back in the hub's layout (merge-lora).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MethodType
from typing import Any

import torch
from torch import nn

from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.shapes import cached_snapshot
from osstune.engine.plan.storage import weights_cached
from osstune.engine.trainer.hub_layout import INDEX_FILE, PACKED, packed_shapes, random_packed
from osstune.engine.trainer.model import ModelError, build_meta_model, reset_rotary, torch_dtype
from osstune.engine.trainer.safetensors_read import unreadable_line


def experts_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ == "GptOssExperts"]


def is_packed(model: nn.Module) -> bool:
    return any(hasattr(m, "gate_up_proj_blocks") for _, m in experts_modules(model))


def pack_experts(model: nn.Module) -> int:
    """Replace each GptOssExperts' bf16 weights by packed uint8 buffers (same device, empty)."""
    from osstune.engine.trainer.ops.moe_lora import lora_experts_forward

    modules = experts_modules(model)
    for _, experts in modules:
        for name in PACKED:
            weight = experts._parameters.pop(name)
            blocks, scales = packed_shapes(name, experts.num_experts, experts.hidden_size,
                                           experts.intermediate_size)
            for suffix, shape in (("blocks", blocks), ("scales", scales)):
                experts.register_buffer(f"{name}_{suffix}", torch.empty(
                    shape, dtype=torch.uint8, device=weight.device), persistent=False)
        experts.gate_up_proj_bias.requires_grad_(False)
        experts.down_proj_bias.requires_grad_(False)
        experts.forward = MethodType(lora_experts_forward, experts)
    return len(modules)


@torch.no_grad()
def fill_random_packed(model: nn.Module, seed: int, device: torch.device | None = None) -> None:
    """Random E2M1 bytes and scales for every packed buffer, drawn where they live."""
    for index, (_, experts) in enumerate(experts_modules(model)):
        for name in PACKED:
            blocks = getattr(experts, f"{name}_blocks")
            gen = torch.Generator(device=device or blocks.device)
            gen.manual_seed(seed * 1_000_003 + 7919 * index + (name == "down_proj"))
            fresh_blocks, fresh_scales = random_packed(tuple(blocks.shape), gen, blocks.device)
            blocks.copy_(fresh_blocks)
            getattr(experts, f"{name}_scales").copy_(fresh_scales)


def _quant_method(config: Any) -> str | None:
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return None
    method = quant.get("quant_method") if isinstance(quant, dict) else \
        getattr(quant, "quant_method", None)
    return str(method).lower() if method is not None else None


def check_quantization(model_id: str, config: Any) -> None:
    """The folder must hold MXFP4 experts: packed training never re-quantizes bf16 weights."""
    method = _quant_method(config)
    if method is None:
        raise ModelError(f"model {model_id}: config.json has no quantization_config: "
                         "model.experts: mxfp4 needs the hub's MXFP4 checkpoint (use "
                         "model.experts: bf16 for a bf16 folder)")
    if method != "mxfp4":
        raise ModelError(f"model {model_id}: config.json: quantization_config.quant_method "
                         f"{method!r} is not supported (osstune reads mxfp4)")


def weights_folder(model_id: str) -> Path:
    """A local folder, or the hub snapshot in the cache (downloaded, or its missing files
    fetched, when the hub answers): a snapshot an interrupted download left partial is not used
    as it is, since a load would stop at its first missing shard."""
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    from osstune.engine.data.tokenizer import hub_reachable

    patterns = ["*.json", "*.safetensors"]
    if weights_cached(model_id):
        try:
            return Path(snapshot_download(model_id, allow_patterns=patterns,
                                          local_files_only=True))
        except Exception:
            pass  # the cache changed under us: fetch as if it were not there
    if not hub_reachable():
        partial = "not all" if cached_snapshot(model_id) is not None else "not"
        raise ModelError(f"model {model_id}: weights are {partial} in the local cache and the "
                         "hub is unreachable")
    return Path(snapshot_download(model_id, allow_patterns=patterns))


def expected_tensors(model: nn.Module) -> dict[str, tuple[tuple[int, ...], bool]]:
    """checkpoint name -> (shape, packed) for every tensor a packed model needs from disk."""
    expected = {n: (tuple(p.shape), False) for n, p in model.named_parameters()}
    for prefix, experts in experts_modules(model):
        for name in PACKED:
            for suffix in ("blocks", "scales"):
                key = f"{name}_{suffix}"
                expected[f"{prefix}.{key}"] = (tuple(getattr(experts, key).shape), True)
    return expected


def _shard_files(folder: Path, model_id: str) -> dict[str, list[str]]:
    """shard file -> tensor names, from the index (or the single model.safetensors)."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"model {model_id}: {index}: not a safetensors index ({e})") from None
        files: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            files.setdefault(file, []).append(name)
        return files
    if (folder / "model.safetensors").is_file():
        return {"model.safetensors": []}  # names read from the file itself
    raise ModelError(f"model {model_id}: {folder} has no {INDEX_FILE} or model.safetensors")


def _place(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[leaf] = tensor


def _load_shard(model: nn.Module, path: Path, names: list[str], expected: dict[str, Any],
                dtype: torch.dtype, device: torch.device, model_id: str) -> list[str]:
    from safetensors import SafetensorError, safe_open

    loaded: list[str] = []
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            present = set(f.keys())
            for name in names or sorted(present):
                if name not in expected:
                    continue  # e.g. a checkpoint's extra buffers: not ours to refuse
                if name not in present:
                    raise ModelError(f"model {model_id}: {path.name}: tensor {name} is listed in "
                                     f"{INDEX_FILE} but not in the file")
                shape, packed = expected[name]
                sliced = f.get_slice(name)
                got = tuple(sliced.get_shape())
                if got != shape:
                    raise ModelError(f"model {model_id}: {path.name}: tensor {name} has shape "
                                     f"{list(got)}, config.json implies {list(shape)}")
                if packed and sliced.get_dtype() != "U8":
                    raise ModelError(f"model {model_id}: {path.name}: tensor {name} is "
                                     f"{sliced.get_dtype()}, MXFP4 blocks/scales are U8")
                tensor = f.get_tensor(name)
                tensor = tensor.to(device) if packed else tensor.to(device=device, dtype=dtype)
                _place(model, name, tensor)
                loaded.append(name)
    except FileNotFoundError:
        raise ModelError(f"model {model_id}: {path}: no such shard (listed in {INDEX_FILE})"
                         ) from None
    except (SafetensorError, OSError) as e:
        raise ModelError(unreadable_line(model_id, path, e)) from None
    return loaded


def load_packed(cfg: RunConfig, config: Any, device: torch.device) -> nn.Module:
    """The model on `device` with experts packed, streamed one shard (one tensor) at a time."""
    model_id = cfg.model.id
    check_quantization(model_id, config)
    folder = weights_folder(model_id)
    model = build_meta_model(config, torch_dtype(cfg.model.dtype))
    pack_experts(model)
    expected = expected_tensors(model)
    loaded: set[str] = set()
    for file, names in _shard_files(folder, model_id).items():
        loaded.update(_load_shard(model, folder / file, names, expected,
                                  torch_dtype(cfg.model.dtype), device, model_id))
    missing = [n for n in expected if n not in loaded]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(f"model {model_id}: {folder}: no tensor {missing[0]}{more} "
                         "(config.json expects it)")
    reset_rotary(model, device)
    return model


def packed_state(model: nn.Module, dequantized: bool = False) -> dict[str, torch.Tensor]:
    """The model's state with the packed experts: hub names (blocks/scales), or `dequantized`
    into transformers' [E, in, out] weights in the model's dtype (exact)."""
    from osstune.engine.trainer.hub_layout import dequantize

    state = dict(model.state_dict())
    for prefix, experts in experts_modules(model):
        for name in PACKED:
            blocks = getattr(experts, f"{name}_blocks")
            scales = getattr(experts, f"{name}_scales")
            if dequantized:
                state[f"{prefix}.{name}"] = dequantize(
                    blocks, scales, experts.gate_up_proj_bias.dtype).transpose(1, 2)
            else:
                state[f"{prefix}.{name}_blocks"] = blocks
                state[f"{prefix}.{name}_scales"] = scales
    return state


def save_hub_model(model: nn.Module, tokenizer: Any, target: Path) -> Path:
    """The hub's layout (experts MXFP4 as loaded, the rest bf16) + generation config, tokenizer;
    a folder `load_packed` and transformers' MXFP4 loader read back."""
    from osstune.engine.trainer.export import GENERATION_CONFIG, save_tokenizer, staged_dir
    from osstune.engine.trainer.hub_layout import write_hub_checkpoint
    from osstune.engine.trainer.model import hf_config_dict

    state = packed_state(model)
    with staged_dir(target) as folder:
        write_hub_checkpoint(folder, hf_config_dict(model.config), state)
        (folder / "generation_config.json").write_text(
            json.dumps(GENERATION_CONFIG, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            save_tokenizer(tokenizer, folder)
    return Path(target)
