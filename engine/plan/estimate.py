"""`estimate(config, hardware) -> Estimate`: GPU memory, host RAM, disk and time of one run.

Torch-free and fast (under a millisecond; ~3 ms resolving `pack_len: auto`): the recommender,
`osstune plan`, the pre-flight and the wizard's Review screen all call it on the effective config
(preset + `--set` + `--dataset`). Every figure is the sum of named terms (engine/plan/memory.py,
storage.py, speed.py), calibrated on the measurements in bench/calibration/*.json.

`unchecked_layers: auto` is resolved the way the engine does it (engine/trainer/ops/
checkpointing.py, which uses the same per-layer term): as many layers as fit on the smallest card
used, 4 GiB below its size, so `peak_mem_gib_per_gpu` is what the run will reserve there and
`min_peak_mem_gib_per_gpu` the all-checkpointed floor.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.hardware import GpuInfo, HardwareProfile
from osstune.engine.plan.memory import (
    MemoryInputs,
    gpu_terms,
    host_terms,
    offload_pass_tokens,
    unchecked_layer_gib,
)
from osstune.engine.plan.packlen import MEMORY_FRACTION, PackLen, choose, dataset_cap
from osstune.engine.plan.shapes import ModelShapes, ShapeError, model_shapes
from osstune.engine.plan.speed import SpeedInputs, positions_per_s, speed_terms
from osstune.engine.plan.storage import disk_terms

# `pack_len: auto` sizes rows for the card's total less this (the CUDA context and the driver's
# share, which an idle card's free memory already lacks: 0.6 GiB used on an idle H200,
# bench/results/2026-11-29-h200-real-probe-presets.txt), or for its free
# memory when other processes hold more: one rule for the plan and the engine (sizing_card_gib).
CARD_RESERVE_GIB = 1.0
AUTO_HEADROOM_GIB = 4.0  # engine/trainer/ops/checkpointing.py fit_unchecked_to_card
CUDA_CONTEXT_GIB = 0.7   # CUDA context and NCCL outside the caching allocator


@dataclass
class DatasetFacts:
    """What the time estimate needs from a dataset (DatasetStats has all of it)."""

    tokens_total: int | None = None  # None: only a sample was read (no time, only the speed)
    examples: int | None = None
    packing_efficiency: float | None = None
    mean_example_tokens: float | None = None


@dataclass
class Estimate:
    ok: bool
    problem: str | None = None  # "no estimate: ..." when the config cannot be modeled
    gpus: int = 0
    peak_mem_gib_per_gpu: float = 0.0
    min_peak_mem_gib_per_gpu: float = 0.0
    card_gib_needed: float = 0.0
    unchecked_layers: int = 0
    layers: int = 0
    pack_len: int = 0  # the packed row length the figures are for (pack_len: auto resolved)
    pack_len_reason: str = ""  # why that length (engine/plan/packlen.py)
    gpu_terms: dict[str, float] = field(default_factory=dict)
    host_ram_gib: float = 0.0
    host_terms: dict[str, float] = field(default_factory=dict)
    disk_gib: float = 0.0
    disk_terms: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float | None = None
    speed_terms_us: dict[str, float] = field(default_factory=dict)
    train_tokens: float | None = None
    time_s: float | None = None
    assumptions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _round_terms(terms: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in terms.items() if v}


def _compiled(cfg: RunConfig, on_gpu: bool) -> bool:
    t, d = cfg.training, cfg.distributed
    if t.compile == "auto":  # engine/trainer/levers.py: packed experts run uncompiled
        return on_gpu and not d.fsdp and d.world_size == 1 and not _packed(cfg)
    return t.compile != "off" and on_gpu


def _packed(cfg: RunConfig) -> bool:
    return cfg.model.experts == "mxfp4"


def _attention(cfg: RunConfig) -> str:
    impl = cfg.model.attn_implementation
    return {"auto": "osstune", "sdpa": "eager"}.get(impl, impl)


def memory_inputs(cfg: RunConfig, shapes: ModelShapes, on_gpu: bool, row_len: int
                  ) -> MemoryInputs:
    t, d = cfg.training, cfg.distributed
    lora = cfg.method == "lora"
    dtype_bytes = 2 if cfg.model.dtype == "bfloat16" else 4
    return MemoryInputs(
        shapes=shapes, dtype_bytes=dtype_bytes,
        packed_experts=_packed(cfg),
        lora_params=shapes.lora_params(cfg.lora.r, cfg.lora.target_modules,
                                       cfg.lora.target_parameters) if lora else 0,
        fsdp=d.fsdp, offload=d.cpu_offload, world_size=d.world_size,
        tokens=t.micro_batch_size * row_len, checkpointing=t.gradient_checkpointing,
        compiled=_compiled(cfg, on_gpu), moe_chunk=t.moe_chunk_tokens,
        pretrained=cfg.model.init == "pretrained", processes_per_node=max(d.gpus, 1),
        reduce_bytes=dtype_bytes if d.reduces_in_param_dtype else 4,
        pass_tokens=offload_pass_tokens(t.micro_batch_size * row_len,
                                        t.gradient_accumulation_steps)
        if d.cpu_offload else None,
        lora_targets=tuple(cfg.lora.target_modules) if lora else None,
        expert_adapters=lora and bool(cfg.lora.target_parameters),
    )


def _used_gpus(hardware: HardwareProfile | None, count: int) -> list[GpuInfo]:
    """The `count` largest cards: the ones a run of `count` GPUs is judged on."""
    if hardware is None or len(hardware.gpus) < count or count < 1:
        return []
    return sorted(hardware.gpus, key=lambda g: g.memory_total_gib, reverse=True)[:count]


def _card_gib(hardware: HardwareProfile | None, count: int, cap: float | None) -> float | None:
    used = _used_gpus(hardware, count)
    if not used:
        return None
    smallest = used[-1].memory_total_gib
    return min(smallest, cap) if cap else smallest


def _unchecked(cfg: RunConfig, m: MemoryInputs, floor: float, card: float | None,
               notes: list[str]) -> int:
    t = cfg.training
    if not t.gradient_checkpointing:
        return m.shapes.layers
    if t.unchecked_layers != "auto":
        return min(int(t.unchecked_layers), m.shapes.layers)
    if m.fsdp or m.world_size > 1 or card is None:
        if card is None and not (m.fsdp or m.world_size > 1):
            notes.append("unchecked_layers auto: no card to fit to, all layers checkpointed")
        return 0
    spare = card - AUTO_HEADROOM_GIB - floor
    per_layer = unchecked_layer_gib(m)
    return max(0, min(m.shapes.layers, int(spare // per_layer))) if per_layer else 0


def _speed(cfg: RunConfig, m: MemoryInputs, unchecked: int, gpu_name: str | None,
           facts: DatasetFacts | None) -> SpeedInputs:
    t = cfg.training
    checked = 0.0 if not t.gradient_checkpointing else 1.0 - unchecked / m.shapes.layers
    mean_doc = facts.mean_example_tokens if facts else None
    if facts and mean_doc is None and facts.examples and facts.tokens_total:
        mean_doc = facts.tokens_total / facts.examples
    mean_doc = min(mean_doc or t.sequence_len, t.sequence_len)  # no example is longer
    return SpeedInputs(
        shapes=m.shapes, full_finetune=cfg.method == "full", tokens=m.tokens,
        row_len=m.tokens // t.micro_batch_size, micro_batches=t.gradient_accumulation_steps,
        checked_fraction=checked, compiled=m.compiled, attention=_attention(cfg),
        moe_chunk=m.moe_chunk, packed_experts=m.packed_experts, offload=m.offload,
        world_size=m.world_size, mean_example_tokens=mean_doc if cfg.dataset.packing else None,
        gpu_name=gpu_name, pass_tokens=m.pass_tokens)


def pack_len_for(cfg: RunConfig, card_gib: float | None, gpu_name: str | None = None,
                 facts: DatasetFacts | None = None) -> PackLen:
    """The packed row length of `cfg` (`pack_len: auto` sized by engine/plan/packlen.py for a
    card of `card_gib`: `sizing_card_gib` of its total and free memory, for the plan and the
    engine alike)."""
    t, d = cfg.training, cfg.distributed
    if not cfg.dataset.packing:
        return PackLen(t.sequence_len, "packing off", "packing off: one example per row")
    if t.pack_len != "auto":
        return PackLen(t.pack_len or t.sequence_len, "set" if t.pack_len else "sequence_len",
                       "training.pack_len" if t.pack_len else "rows of sequence_len")
    if d.gpus < 1 or d.backend == "gloo":
        return PackLen(t.sequence_len, "cpu", "auto: rows of sequence_len on the CPU")
    if card_gib is None:
        return PackLen(t.sequence_len, "no card", "auto: no card to size rows for")
    try:
        shapes = model_shapes(cfg.model.id, cfg.model.architecture)
    except ShapeError:
        return PackLen(t.sequence_len, "no estimate", "auto: the model's shapes are not known")
    all_checked = 0 if t.gradient_checkpointing else shapes.layers
    @functools.cache
    def inputs(n: int) -> MemoryInputs:  # the row length sets the tokens (and offload's pass)
        return memory_inputs(cfg, shapes, True, n)

    @functools.cache
    def floor(n: int) -> float:  # bisection and speed ask for the same lengths
        return sum(gpu_terms(inputs(n), all_checked).values())

    def speed(n: int) -> float:  # `unchecked_layers: auto` at its floor (no card: 0 layers), so
        # the speeds, and the length chosen, do not hinge on whole layers fitting the spare memory:
        # the length only grows with the card (tests/test_pack_len_monotone.py)
        m = inputs(n)
        unchecked = _unchecked(cfg, m, 0.0, None, [])  # no card: its floor is not read
        return positions_per_s(_speed(cfg, m, unchecked, gpu_name, facts))

    budget = card_gib * MEMORY_FRACTION - CUDA_CONTEXT_GIB
    rows_per_step = t.micro_batch_size * t.gradient_accumulation_steps * d.world_size
    auto = t.gradient_checkpointing and t.unchecked_layers == "auto"
    return choose(t.sequence_len, lambda n: floor(n) <= budget, speed,
                  dataset_cap(facts.tokens_total if facts else None, rows_per_step),
                  " with every layer checkpointed" if auto else "")


def sizing_card_gib(total_gib: float | None, free_gib: float | None = None) -> float | None:
    """The memory `pack_len: auto` sizes rows for, the same rule for `osstune plan` (the
    profile's cards) and the engine (the card it starts on: engine/trainer/batches.py): the
    card's total less CARD_RESERVE_GIB, or its free memory when that is less."""
    if total_gib is None:
        return None
    usable = total_gib - CARD_RESERVE_GIB
    return usable if free_gib is None else min(usable, free_gib)


def pack_len_on(cfg: RunConfig, hardware: HardwareProfile | None,
                facts: DatasetFacts | None = None, memory_cap_gib: float | None = None
                ) -> PackLen:
    """`pack_len_for` on the smallest of the cards the run uses (planning: the profile's, with
    their free memory when the profile has it)."""
    card = _card_gib(hardware, cfg.distributed.gpus, memory_cap_gib)
    used = _used_gpus(hardware, cfg.distributed.gpus)
    known = [g.memory_free_gib for g in used if g.memory_free_gib is not None]
    free = min(known) if known and len(known) == len(used) else None
    gpu = hardware.gpus[0].name if hardware and hardware.gpus else None
    return pack_len_for(cfg, sizing_card_gib(card, free), gpu, facts)


def _gpu_name(hardware: HardwareProfile | None, notes: list[str]) -> str | None:
    if hardware and hardware.gpus:
        return hardware.gpus[0].name
    notes.append("speed for an H200 (no GPU in the hardware profile)")
    return None


def estimate(cfg: RunConfig, hardware: HardwareProfile | None = None, *,
             dataset: DatasetFacts | None = None, memory_cap_gib: float | None = None,
             checkpoints_on_disk: int = 0) -> Estimate:
    """The estimate of `cfg` on `hardware` (None: no card to fit `auto` to, H200 speeds);
    `checkpoints_on_disk`: finished checkpoints a resume finds in the folder (disk only)."""
    try:
        shapes = model_shapes(cfg.model.id, cfg.model.architecture)
    except ShapeError as e:
        return Estimate(ok=False, problem=str(e))
    d = cfg.distributed
    on_gpu = d.gpus > 0 and d.backend != "gloo"
    notes: list[str] = []
    rows = pack_len_on(cfg, hardware, dataset, memory_cap_gib)
    m = memory_inputs(cfg, shapes, on_gpu, rows.length)
    est = Estimate(ok=True, gpus=d.gpus if on_gpu else 0, layers=shapes.layers, assumptions=notes,
                   pack_len=rows.length, pack_len_reason=rows.why)
    if on_gpu:
        floor_terms = gpu_terms(m, 0 if cfg.training.gradient_checkpointing else shapes.layers)
        floor = sum(floor_terms.values())
        card = _card_gib(hardware, d.gpus, memory_cap_gib)
        est.unchecked_layers = _unchecked(cfg, m, floor, card, notes)
        terms = gpu_terms(m, est.unchecked_layers)
        est.gpu_terms = _round_terms(terms)
        est.peak_mem_gib_per_gpu = round(sum(terms.values()), 2)
        auto = cfg.training.unchecked_layers == "auto"
        est.min_peak_mem_gib_per_gpu = round(floor if auto else est.peak_mem_gib_per_gpu, 2)
        est.card_gib_needed = round(est.min_peak_mem_gib_per_gpu + CUDA_CONTEXT_GIB, 2)
    est.host_terms = _round_terms(host_terms(m, on_gpu))
    est.host_ram_gib = round(sum(est.host_terms.values()), 2)
    cached = hardware.hf_cached_models if hardware is not None else None
    steps = cfg.training.max_steps
    est.disk_terms = _round_terms(disk_terms(cfg, shapes, m.lora_params, m.dtype_bytes, steps,
                                             cached, checkpoints_on_disk))
    est.disk_gib = round(sum(est.disk_terms.values()), 2)
    if cached is None and est.disk_terms.get("model download (not in the HF cache)"):
        notes.append("disk counts the model download (the profile does not list the models in "
                     "its HF cache: hf_cached_models)")
    if on_gpu:
        _time(cfg, est, m, _gpu_name(hardware, notes), dataset)
    return est


def _time(cfg: RunConfig, est: Estimate, m: MemoryInputs, gpu_name: str | None,
          facts: DatasetFacts | None) -> None:
    inputs = _speed(cfg, m, est.unchecked_layers, gpu_name, facts)
    est.speed_terms_us = _round_terms(speed_terms(inputs))
    efficiency = (facts.packing_efficiency if facts and facts.packing_efficiency else 1.0)
    if not (facts and facts.packing_efficiency):
        est.assumptions.append("rows full of real tokens (no dataset statistics)")
    est.tokens_per_s = round(positions_per_s(inputs) * efficiency, 1)
    t = cfg.training
    if t.max_steps:
        est.train_tokens = float(t.max_steps * t.gradient_accumulation_steps * m.tokens
                                 * m.world_size * efficiency)
    elif facts and facts.tokens_total:
        est.train_tokens = float(facts.tokens_total * t.num_epochs)
    if est.train_tokens and est.tokens_per_s:
        est.time_s = round(est.train_tokens / est.tokens_per_s, 1)
