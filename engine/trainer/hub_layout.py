"""GPT-OSS checkpoints in the hub's layout: MXFP4 expert weights, everything else bf16.

The public `openai/gpt-oss-20b` / `-120b` folders store each layer's experts as

    model.layers.N.mlp.experts.gate_up_proj_blocks  uint8 [E, 2I, H/32, 16]
    model.layers.N.mlp.experts.gate_up_proj_scales  uint8 [E, 2I, H/32]
    model.layers.N.mlp.experts.gate_up_proj_bias    bf16  [E, 2I]
    model.layers.N.mlp.experts.down_proj_blocks     uint8 [E, H, I/32, 16]
    model.layers.N.mlp.experts.down_proj_scales     uint8 [E, H, I/32]
    model.layers.N.mlp.experts.down_proj_bias       bf16  [E, H]

Blocks hold E2M1 (FP4) codes two per byte, low nibble first (even K index), 32 K values per block;
each scale is an E8M0 exponent: the block's values are code_value x 2^(scale - 127). The weights are
[out, in] (transformers' bf16 `gate_up_proj` is [E, H, 2I], i.e. the transpose), gate and up rows
interleaved. Every E2M1 value times a power of two is a bf16 value, so dequantizing is exact.

`write_hub_checkpoint` writes such a folder (sharded safetensors + index + config.json with the
hub's `quantization_config`) from a model's bf16 state; `random_packed` draws packed experts;
`dequantize` is the just-in-time dequantizer the packed-experts training path runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# E2M1 code -> value (bit 3 sign, bits 1-2 exponent, bit 0 mantissa), as in the OCP MX spec.
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
              -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
BLOCK = 32  # K values per scale
PACKED = ("gate_up_proj", "down_proj")
QUANTIZATION_CONFIG = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                               "model.embed_tokens", "lm_head"],
}
INDEX_FILE = "model.safetensors.index.json"
# Scale exponent of random experts: uniform E2M1 codes have an RMS of 2.93, times 2^-7 ~ 0.023,
# close to GPT-OSS's initializer_range of 0.02.
RANDOM_SCALE = 120

_BYTE_TABLES: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _byte_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[256, 2]: a byte's two values (low nibble first), so one gather decodes a whole byte."""
    key = (dtype, device)
    if key not in _BYTE_TABLES:
        values = torch.tensor(FP4_VALUES, dtype=torch.float32)
        codes = torch.arange(256)
        table = torch.stack([values[codes & 0x0F], values[codes >> 4]], dim=1)
        _BYTE_TABLES[key] = table.to(device=device, dtype=dtype)
    return _BYTE_TABLES[key]


def _decode(blocks: torch.Tensor, scales: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """[R, G, 16] bytes, [R, G] exponents -> [R, G, 32] values (gather, then x 2^(s - 127))."""
    values = table[blocks.to(torch.int32)].flatten(-2)
    power = torch.exp2(scales.to(torch.float32) - 127.0).to(table.dtype)
    return values * power.unsqueeze(-1)


_COMPILED: list[Any] = []


def _fused_decode() -> Any:
    """`_decode` as one CUDA kernel: reads the packed byte once, writes the values once (eager
    runs four passes over int32 indices and intermediate values)."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(_decode, dynamic=False, fullgraph=True))
    return _COMPILED[0]


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16,
               chunk_bytes: int = 1 << 26) -> torch.Tensor:
    """blocks [..., G, 16] uint8 + scales [..., G] uint8 -> [..., G * 32] in `dtype` (exact).

    On CUDA one fused kernel; elsewhere chunks of at most `chunk_bytes` packed bytes, so the int32
    gather indices stay small next to the output.
    """
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != BLOCK // 2:
        raise ValueError(f"blocks {tuple(blocks.shape)} do not match scales {tuple(scales.shape)}")
    table = _byte_table(dtype, blocks.device)
    *prefix, groups, half = blocks.shape
    flat_blocks = blocks.reshape(-1, groups, half)
    flat_scales = scales.reshape(-1, groups)
    if blocks.is_cuda:
        return _fused_decode()(flat_blocks, flat_scales, table).view(*prefix, groups * BLOCK)
    out = torch.empty(flat_blocks.shape[0], groups, BLOCK, dtype=dtype, device=blocks.device)
    step = max(1, chunk_bytes // max(groups * half, 1))
    for r0 in range(0, flat_blocks.shape[0], step):
        r1 = min(r0 + step, flat_blocks.shape[0])
        out[r0:r1] = _decode(flat_blocks[r0:r1], flat_scales[r0:r1], table)
    return out.view(*prefix, groups * BLOCK)


def packed_shapes(name: str, experts: int, hidden: int, intermediate: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(blocks shape, scales shape) of `gate_up_proj` or `down_proj` in the hub layout."""
    out_dim, in_dim = (2 * intermediate, hidden) if name == "gate_up_proj" else \
        (hidden, intermediate)
    if in_dim % BLOCK:
        raise ValueError(f"{name}: input size {in_dim} is not a multiple of {BLOCK}")
    scales = (experts, out_dim, in_dim // BLOCK)
    return scales + (BLOCK // 2,), scales


def random_packed(shape_blocks: tuple[int, ...], generator: torch.Generator,
                  device: torch.device | str = "cpu", scale: int = RANDOM_SCALE,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random E2M1 bytes and exponents scale-1..scale+1 (drawn on `device`, never on disk)."""
    blocks = torch.randint(0, 256, shape_blocks, dtype=torch.uint8, device=device,
                           generator=generator)
    scales = torch.randint(scale - 1, scale + 2, shape_blocks[:-1], dtype=torch.uint8,
                           device=device, generator=generator)
    return blocks, scales


def quantize_exact(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., K] MXFP4 values (E2M1 x 2^k per 32-block, e.g. from `dequantize`) -> packed.

    Lossless for such values (a round trip of `dequantize`); raises ValueError otherwise: the hub
    layout never stores a rounded weight here.
    """
    *prefix, k = weight.shape
    w = weight.detach().to(torch.float32).reshape(-1, k // BLOCK, BLOCK)
    peak = w.abs().amax(dim=-1)
    # codes reach 6 = 1.5 x 2^2: put the block's peak in [4, 8) x 2^exp
    exp = torch.where(peak > 0, torch.floor(torch.log2(peak)) - 2, torch.zeros_like(peak))
    exp = exp.clamp(-127, 127)
    scaled = w / torch.exp2(exp).unsqueeze(-1)
    values = torch.tensor(FP4_VALUES[:8])
    codes = (scaled.abs().unsqueeze(-1) - values).abs().argmin(-1)
    codes = codes + 8 * (scaled < 0)
    if not torch.equal(values[codes % 8] * torch.where(scaled < 0, -1.0, 1.0), scaled):
        raise ValueError("weights are not MXFP4 values (E2M1 x 2^k per 32-block)")
    codes = codes.to(torch.uint8).reshape(*prefix, k // BLOCK, BLOCK // 2, 2)
    blocks = codes[..., 0] | (codes[..., 1] << 4)
    scales = (exp + 127).to(torch.uint8).reshape(*prefix, k // BLOCK)
    return blocks, scales


def hub_tensors(state: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """A GptOssForCausalLM state (bf16 experts [E, in, out], or packed already) in hub naming.

    bf16 expert weights must hold MXFP4 values (`quantize_exact`); packed ones pass through.
    """
    for name, tensor in state.items():
        base, _, leaf = name.rpartition(".")
        if base.endswith("mlp.experts") and leaf in PACKED:
            blocks, scales = quantize_exact(tensor.transpose(1, 2))  # -> [E, out, in]
            yield f"{name}_blocks", blocks
            yield f"{name}_scales", scales
        else:
            yield name, tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor


def write_hub_checkpoint(folder: Path, config: dict[str, Any],
                         tensors: dict[str, torch.Tensor] | Iterator[tuple[str, torch.Tensor]],
                         shard_bytes: int = 2 << 30) -> Path:
    """config.json (with the hub's quantization_config) + sharded safetensors + index.

    `tensors`: a GptOssForCausalLM state (see `hub_tensors`) or an iterator of hub-named tensors;
    each shard is written as soon as it is full, so at most one shard is ever in memory.
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    items = hub_tensors(tensors) if isinstance(tensors, dict) else tensors
    shard: dict[str, torch.Tensor] = {}
    written: list[list[str]] = []
    total = size = 0

    def flush() -> None:
        save_file(shard, str(folder / f"part-{len(written)}.tmp"), metadata={"format": "pt"})
        written.append(list(shard))
        shard.clear()

    for name, tensor in items:
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > shard_bytes:
            flush()
            size = 0
        shard[name] = tensor.contiguous()
        size += nbytes
        total += nbytes
    if shard or not written:
        flush()
    weight_map: dict[str, str] = {}
    for i, names in enumerate(written):
        file = f"model-{i:05d}-of-{len(written) - 1:05d}.safetensors"  # the hub's numbering
        (folder / f"part-{i}.tmp").rename(folder / file)
        weight_map.update(dict.fromkeys(names, file))
    (folder / INDEX_FILE).write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    data = dict(config)
    data["quantization_config"] = dict(QUANTIZATION_CONFIG)
    data["architectures"] = ["GptOssForCausalLM"]
    data["torch_dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(data, indent=2))
    return folder


class SeededDraw:
    """Random tensors from one seeded generator (reproducible: the tests' fixtures)."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, shape: tuple[int, ...], std: float) -> torch.Tensor:
        return (torch.randn(shape, generator=self.gen) * std).to(torch.bfloat16)

    def packed(self, shape_blocks: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return random_packed(shape_blocks, self.gen)


def random_hub_tensors(config: Any, seed: int = 0, std: float = 0.02, draw: Any = None
                       ) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a hub checkpoint for `config` (a GptOssConfig), random, one at a time.

    Norm weights 1, biases 0 (router bias random), the rest N(0, std) in bf16; experts as
    random packed bytes. No model is ever built in memory: any size can be written. `draw`
    has `normal(shape, std)` and `packed(blocks_shape)`; without one, `SeededDraw(seed)`
    (`seed` is only used then).
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    draw = draw or SeededDraw(seed)
    for name, param in meta.named_parameters():
        base, _, leaf = name.rpartition(".")
        if base.endswith("mlp.experts") and leaf in PACKED:
            blocks, _ = packed_shapes(leaf, config.num_local_experts, config.hidden_size,
                                      config.intermediate_size)
            packed_blocks, packed_scales = draw.packed(blocks)
            yield f"{name}_blocks", packed_blocks
            yield f"{name}_scales", packed_scales
        elif name.endswith("norm.weight"):
            yield name, torch.ones(param.shape, dtype=torch.bfloat16)
        elif leaf == "bias" and not name.endswith("router.bias") or leaf.endswith("_bias"):
            yield name, torch.zeros(param.shape, dtype=torch.bfloat16)
        else:
            yield name, draw.normal(tuple(param.shape), std)
