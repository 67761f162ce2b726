"""The nearest changes that make a config fit a machine, each with its own estimate.

Torch-free. Candidates, one change at a time and then the pairs of them: shorter rows, micro-batch
1, every layer checkpointed, packed MXFP4 experts (where the config schema has `model.experts`),
FSDP + CPU offload for a full fine-tune, more GPUs for FSDP, and when the disk is short one
checkpoint kept and no export. Each is judged like any config (engine/plan/recommend.judge) and
carries its own estimate; the ones that fit come first, fewest changes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from osstune.engine.plan.config import ConfigError, RunConfig, apply_overrides, validate
from osstune.engine.plan.estimate import DatasetFacts, Estimate
from osstune.engine.plan.hardware import HardwareProfile
from osstune.engine.plan.recommend import disk_needs, judge

MAX_SUGGESTIONS = 4


@dataclass
class Suggestion:
    changes: list[str]  # `--set` items
    verdict: str
    peak_mem_gib_per_gpu: float
    host_ram_gib: float
    disk_gib: float
    min_peak_mem_gib_per_gpu: float = 0.0  # all layers checkpointed (unchecked_layers: auto)
    tokens_per_s: float | None = None
    pack_len: int = 0


def _single_changes(cfg: RunConfig, profile: HardwareProfile, disk_short: bool) -> list[str]:
    t, d = cfg.training, cfg.distributed
    out: list[str] = []
    if isinstance(t.pack_len, int) and t.pack_len > t.sequence_len:
        out.append("training.pack_len=null")  # rows of sequence_len
    length = t.sequence_len // 2
    while length >= 1024 and len([c for c in out if "sequence_len" in c]) < 3:
        out.append(f"training.sequence_len={length}")
        length //= 2
    if t.micro_batch_size > 1:
        out.append("training.micro_batch_size=1")
    if isinstance(t.unchecked_layers, int) and t.unchecked_layers > 0:
        out.append("training.unchecked_layers=0")
    if not t.gradient_checkpointing:
        out.append("training.gradient_checkpointing=true")
    if cfg.method == "lora" and "experts" in type(cfg.model).model_fields \
            and getattr(cfg.model, "experts", None) != "mxfp4":
        out.append("model.experts=mxfp4")
    if cfg.method == "full" and not d.cpu_offload:
        out.append("distributed.cpu_offload=true" if d.fsdp
                   else "distributed.fsdp=true,distributed.cpu_offload=true")
    if d.fsdp:
        out += [f"distributed.gpus={n}" for n in (2, 4, 8)
                if d.gpus < n <= len(profile.gpus)]
    if disk_short:  # checkpoints and the export are most of what a run writes
        out += ["output.keep_last=1"] if cfg.output.keep_last > 1 else []
        out += ["output.export=false"] if cfg.output.export and cfg.method == "full" else []
    return out


def _variant(cfg: RunConfig, changes: list[str]) -> RunConfig | None:
    items = [item for change in changes for item in change.split(",")]
    try:
        return validate(apply_overrides(cfg.model_dump(mode="json"), items), "suggestion")
    except ConfigError:
        return None


def suggestions(cfg: RunConfig, profile: HardwareProfile, dataset: DatasetFacts | None = None,
                now: Estimate | None = None) -> list[Suggestion]:
    """Changes that make `cfg` fit (or fit tightly) on `profile`, nearest first; `now`: the
    estimate of `cfg` when the caller has it already."""
    now = now or judge(cfg, profile, dataset, other_counts=False).estimate
    disk_short = now is not None and now.ok and \
        disk_needs(now, profile)[1] > profile.disk_free_gib  # at the output folder
    singles = _single_changes(cfg, profile, disk_short)
    found: list[Suggestion] = []
    for size in (1, 2):
        for combo in combinations(singles, size):
            if sum("sequence_len" in c for c in combo) > 1:
                continue
            variant = _variant(cfg, list(combo))
            if variant is None:
                continue
            v = judge(variant, profile, dataset, other_counts=False)  # as changed, nothing else
            if v.estimate is None or v.verdict == "does-not-fit":
                continue
            est = v.estimate
            found.append(Suggestion([c for item in combo for c in item.split(",")], v.verdict,
                                    est.peak_mem_gib_per_gpu, est.host_ram_gib, est.disk_gib,
                                    est.min_peak_mem_gib_per_gpu, est.tokens_per_s,
                                    est.pack_len))
        if found:
            break
    found.sort(key=lambda s: (s.verdict != "fits", len(s.changes)))
    return found[:MAX_SUGGESTIONS]
