"""Training tokens/s of a run, term by term, from its shapes and the GPU's peak figures.

Torch-free. Time per row position on the reference card (H200: 989 TFLOP/s dense bf16,
4.8 TB/s), in microseconds, summed from:

- matmuls: forward FLOPs of the active parameters x (1 forward + backward + recompute), where
  backward is ~1 forward for LoRA (input gradients only) and 2 for a full fine-tune, recompute is
  the checkpointed share of the layers, and MoE blocks chunked on long rows run once more in
  every layer (checkpointed or not);
- element-wise MoE work when the blocks are not compiled (SwiGLU, routing);
- attention: keys attended per query (packed examples attend only within themselves; sliding
  layers see the window) x (forward, 2 for backward, recompute); eager attention is much slower;
- fixed costs per micro-batch and per optimizer step (kernel launches, host syncs, the optimizer);
- MXFP4-packed experts: dequantizing each layer's experts at every use (forward, backward, and
  each recompute), uncompiled (the engine does not compile them);
- CPU offload: the step's micro-batches run as merged passes (engine/trainer/offload.py), with
  the fixed cost and the parameters in (twice) and gradients out over PCIe once per pass; the
  fused AdamW step and the gradient norm on the CPU once per step.

Another card scales the compute terms by 0.75 x (peak FLOPs ratio) + 0.25 x (bandwidth ratio)
(fitted: the same bench step is ~10 % slower on an H100 than on an H200). The constants are
fitted to bench/calibration/*.json (tests/test_estimate.py: every point within +-25 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from osstune.engine.plan.flops import mean_attended_keys
from osstune.engine.plan.shapes import ModelShapes

# (name substring, dense bf16 FLOP/s, memory bandwidth B/s); the first match wins.
GPU_SPECS: tuple[tuple[str, float, float], ...] = (
    ("GH200", 989e12, 4.0e12), ("H200", 989e12, 4.8e12), ("H100 PCIe", 756e12, 2.0e12),
    ("H100", 989e12, 3.35e12), ("H800", 989e12, 3.35e12), ("B200", 2250e12, 8.0e12),
    ("A100", 312e12, 2.0e12), ("A800", 312e12, 2.0e12), ("L40S", 362e12, 0.864e12),
    ("A6000", 155e12, 0.768e12), ("4090", 165e12, 1.0e12), ("L4", 121e12, 0.3e12),
)
REFERENCE = ("H200", 989e12, 4.8e12)

US_PER_MATMUL_GFLOP = 1.90     # compiled LoRA steps at 8192 tokens
US_PER_ATTN_GFLOP = 3.8        # 65,536 vs 131,072-token rows
EAGER_ATTN_FACTOR = 26.0       # eager materialises every score, also on sliding layers
                               # (2,924 vs 5,666 tok/s at 2048)
US_PER_MOE_ELEMENT_UNCOMPILED = 37e-6  # per routed row x intermediate unit x layer, per pass
MICRO_BATCH_FIXED_US = 145_000.0
OPTIMIZER_STEP_FIXED_US = 74_000.0
# Pinned host <-> GPU copies per GPU: 54.9 GB/s measured on an H200 (PCIe 5.0; bench/results/
# 2026-11-29-h200-offload-proxy-8layers.json), taken for the other PCIe 5.0 cards; 25 GB/s
# (PCIe 4.0 x16, not measured here) for the rest.
PCIE5_GPUS = ("H100", "H200", "H800", "B200")
PCIE5_BYTES_PER_S = 54.9e9
PCIE_BYTES_PER_S = 25e9
# Offloaded optimizer step on the host, per parameter: torch's fused CPU AdamW over bf16 states,
# 1.3 s for 7.74B parameters on 16 cores (same results file). The rest of an offloaded step's host
# side (the gradient norm the clip needs, the clip itself riding along the AdamW step, and what of
# the copies does not overlap) is fitted to the 4-layer proxy's steady step, 3.20 s with the other
# terms fixed (bench/calibration/h200-fft-offload-proxy-4layers-bf16reduce.json); how it splits
# is not measured.
CPU_ADAM_S_PER_PARAM = 1.68e-10
CPU_GRAD_NORM_S_PER_PARAM = 2.7e-10
# Dequantizing packed experts: bf16 bytes written per second, plus a fixed cost per call (one
# projection's experts of one layer, at each use), fitted together to the packed runs: 20b at
# 2048/8192/16,384 and 120b at 2048 (bench/calibration/h200-packed-*-run3.json,
# h200-cli-lora-mxfp4-2048.json, h200-120b-packed-2048.json). The cost per byte alone
# cannot fit both models (20b would need ~0.5 TB/s, 120b ~1.5 TB/s).
DEQUANT_BYTES_PER_S = 2.0e12
DEQUANT_CALL_S = 0.3e-3


def gpu_spec(name: str | None) -> tuple[str, float, float] | None:
    for key, flops, bandwidth in GPU_SPECS:
        if name and key in name:
            return key, flops, bandwidth
    return None


def compute_scale(name: str | None) -> float:
    spec = gpu_spec(name) or REFERENCE
    return 0.75 * REFERENCE[1] / spec[1] + 0.25 * REFERENCE[2] / spec[2]


@dataclass(frozen=True)
class SpeedInputs:
    shapes: ModelShapes
    full_finetune: bool
    tokens: int          # positions per micro-batch (micro_batch_size x sequence_len)
    row_len: int         # sequence_len
    micro_batches: int   # gradient_accumulation_steps
    checked_fraction: float
    compiled: bool
    attention: str       # osstune | flex_attention | eager
    moe_chunk: int | None
    packed_experts: bool
    offload: bool
    world_size: int
    mean_example_tokens: float | None  # packed examples attend within themselves
    gpu_name: str | None
    pass_tokens: int | None = None  # CPU offload: tokens of a merged pass (micro-batches merged)


def _attended(s: ModelShapes, row: int, doc: float | None, eager: bool) -> float:
    span = row if doc is None else max(1, min(row, round(doc)))
    full = mean_attended_keys(span, None)
    sliding = mean_attended_keys(span, s.sliding_window)
    if s.sliding_window is None or eager:
        sliding = full
    return (s.layers - s.sliding_layers) * full + s.sliding_layers * sliding


def speed_terms(i: SpeedInputs) -> dict[str, float]:
    """Microseconds per row position, term by term (summed: the time per position)."""
    s = i.shapes
    scale = compute_scale(i.gpu_name)
    backward = 2.0 if i.full_finetune else 1.0
    passes = 1.0 + backward + i.checked_fraction
    fwd_gflop = 2.0 * s.active_params() / 1e9
    moe_share = s.experts_per_tok * 3 * s.hidden * s.intermediate * s.layers / s.active_params()
    # rows longer than moe_chunk run every MoE block as checkpointed chunks: one more MoE
    # forward in every layer's backward, checkpointed or not (the 20,480-token rows of
    # bench/calibration/h200-cli-lora-1gpu-auto20480.json: no faster than 8192)
    chunk_pass = 1.0 if i.moe_chunk is not None and i.tokens > i.moe_chunk else 0.0
    matmul_passes = passes + moe_share * chunk_pass
    terms = {"matmuls": scale * US_PER_MATMUL_GFLOP * fwd_gflop * matmul_passes}
    if not i.compiled:
        elements = s.experts_per_tok * s.intermediate * s.layers
        terms["MoE element-wise (not compiled)"] = scale * (
            US_PER_MOE_ELEMENT_UNCOMPILED * elements * (passes + chunk_pass))
    eager = i.attention == "eager"
    attn_gflop = 4.0 * s.attn_width * _attended(s, i.row_len, i.mean_example_tokens, eager) / 1e9
    factor = EAGER_ATTN_FACTOR if eager else 1.0
    terms["attention"] = scale * US_PER_ATTN_GFLOP * factor * attn_gflop * (
        1.0 + 2.0 + i.checked_fraction)
    per_pass = i.pass_tokens or i.tokens
    step_tokens = i.tokens * i.micro_batches
    terms["per micro-batch fixed"] = MICRO_BATCH_FIXED_US / per_pass
    terms["per optimizer step fixed"] = OPTIMIZER_STEP_FIXED_US / step_tokens
    if i.packed_experts:  # every use dequantizes: forward, recompute(s), backward
        uses = 2.0 + i.checked_fraction + chunk_pass
        per_use = 2 * DEQUANT_CALL_S + s.expert_weights() * 2 / DEQUANT_BYTES_PER_S
        dequant_s = s.layers * uses * per_use  # (gate/up and down: two calls per use)
        terms["dequantizing experts"] = dequant_s * 1e6 / i.tokens
    if i.offload:
        per_rank = s.total_params() / i.world_size
        pcie_s = 3 * per_rank * 2 / pcie_bytes_per_s(i.gpu_name)  # params in twice, grads out
        terms["PCIe (CPU offload)"] = pcie_s * 1e6 / per_pass
        terms["AdamW on the CPU"] = per_rank * CPU_ADAM_S_PER_PARAM * 1e6 / step_tokens
        terms["gradient norm and the rest on the CPU"] = (
            per_rank * CPU_GRAD_NORM_S_PER_PARAM * 1e6 / step_tokens)
    return terms


def pcie_bytes_per_s(gpu_name: str | None) -> float:
    name = gpu_name or REFERENCE[0]
    return PCIE5_BYTES_PER_S if any(k in name for k in PCIE5_GPUS) else PCIE_BYTES_PER_S


def positions_per_s(i: SpeedInputs) -> float:
    """Row positions per second for the whole run (all ranks)."""
    return 1e6 / sum(speed_terms(i).values()) * i.world_size
