"""Which presets fit a machine, and which one to recommend.

No torch import. Each config (a preset, or the effective config of a run: preset + `--set` +
`--dataset`) is estimated for the machine (engine/plan/estimate.py: GPU memory, host RAM, disk
from the config itself, not from the preset's `requirements` block, which stays as documentation
of the measured anchor); each requirement is compared with the hardware profile and gives one
reason, in numbers. With `unchecked_layers: auto` the GPU verdict judges the all-checkpointed
floor (the run fills the rest of the card by design).

Verdicts
  fits          every requirement is met with at least 10% headroom
  tight         every requirement is met, but one has less than 10% headroom, measured as
                (available - needed) / available: GPU memory on the smallest card used, host RAM,
                free disk at the output directory; or a GPU that is used now by other processes
                has less free memory than the preset's peak (probed machines only)
  does-not-fit  some requirement is not met: too few GPUs, cards too small, too little host RAM
                or disk

An FSDP config is also estimated at the other GPU counts this machine has (2, 4, 8); the config's
own count is preferred when it fits as well as the others.

Recommendation: the most capable GPT-OSS preset that fits, in the order of CAPABILITY. A `tight`
preset is recommended only when no GPU preset fits outright. The CPU demo (a preset that needs no
GPU) is recommended only when no GPU preset fits even tightly - on a CPU-only machine, for example.
When nothing fits, the summary says so and what hardware the smallest GPT-OSS recipes need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from osstune.engine.plan.config import Requirements
from osstune.engine.plan.estimate import DatasetFacts, Estimate, estimate
from osstune.engine.plan.hardware import GpuInfo, HardwareProfile
from osstune.engine.plan.storage import split_download
from osstune.engine.plan.units import fmt_gib

if TYPE_CHECKING:
    from osstune.engine.plan.config import RunConfig

Verdict = Literal["fits", "tight", "does-not-fit"]

TIGHT_HEADROOM = 0.10

# Most capable first.
CAPABILITY = (
    "gpt-oss-120b-fft-fsdp2-offload",
    "gpt-oss-20b-fft-fsdp2",
    "gpt-oss-20b-fft-fsdp2-offload",
    "gpt-oss-20b-lora-1gpu",
    "gpt-oss-120b-lora-mxfp4",
    "gpt-oss-20b-lora-mxfp4",
    "tiny-cpu-demo",
)

_SEVERITY: dict[Verdict, int] = {"fits": 0, "tight": 1, "does-not-fit": 2}


@dataclass
class PresetVerdict:
    name: str
    verdict: Verdict
    reasons: list[str]
    recommended: bool
    description: str
    requirements: Requirements | None
    estimate: Estimate | None = None


@dataclass
class Recommendation:
    verdicts: list[PresetVerdict]
    recommended: str | None
    summary: str


def _worst(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=_SEVERITY.__getitem__, default="fits")


def _headroom(needed: float, available: float) -> tuple[Verdict, str]:
    """Verdict for one resource and the headroom text that goes with it."""
    if available < needed:
        return "does-not-fit", ""
    # Rounded so that a figure exactly at the threshold is not tipped over by float error.
    share = round((available - needed) / available, 9) if available else 0.0
    verdict: Verdict = "tight" if share < TIGHT_HEADROOM else "fits"
    return verdict, f" ({share:.0%} headroom)"


Finding = tuple[Verdict, str]


def _gpu_check(req: Requirements, count: int, peak: float, gpus: list[GpuInfo],
               probed: bool) -> list[Finding]:
    used = sorted(gpus, key=lambda g: g.memory_total_gib, reverse=True)[:count]
    smallest = used[-1].memory_total_gib
    # The card must hold the peak plus what lives outside the allocator (the same margin at
    # every GPU count).
    needed_card = peak + max(0.0, req.min_gpu_mem_gib - req.peak_mem_gib_per_gpu)
    where = "on one GPU" if count == 1 else f"on each of {count} GPUs"
    card = "" if needed_card <= peak else f" (cards of >= {fmt_gib(needed_card)})"
    if count == 1:
        have = f"the largest has {fmt_gib(smallest)}"
    elif all(g.memory_total_gib == smallest for g in used):
        have = f"each has {fmt_gib(smallest)}"
    else:
        have = f"the smallest of them has {fmt_gib(smallest)}"
    need = f"needs ~{fmt_gib(peak)} {where}{card}"
    if smallest < needed_card:
        return [("does-not-fit", f"{need}; {have}")]
    verdict, headroom = _headroom(peak, smallest)
    findings: list[Finding] = [(verdict, f"{need}; {have}{headroom}")]
    if probed:
        for g in used:
            if g.memory_free_gib is not None and g.memory_free_gib < peak:
                in_use = f" (in use: {fmt_gib(g.memory_used_gib)})" if g.memory_used_gib else ""
                free = fmt_gib(g.memory_free_gib)
                findings.append(("tight", f"GPU {g.index} has only {free} free now{in_use}"))
    return findings


def _gpu_counts(req: Requirements) -> dict[int, float]:
    """GPU count -> peak GiB per GPU, the preset's own count included."""
    return {**{int(k): float(v) for k, v in req.peak_mem_gib_by_gpus.items()},
            req.gpus: req.peak_mem_gib_per_gpu}


def _gpu_findings(req: Requirements, profile: HardwareProfile) -> list[Finding]:
    counts = _gpu_counts(req)
    have = len(profile.gpus)
    usable = sorted(c for c in counts if c <= have)
    plural = "GPU" if req.gpus == 1 else "GPUs"
    others = sorted(c for c in counts if c != req.gpus)
    alt = f" (or {', '.join(map(str, others))})" if others else ""
    if not usable:
        return [("does-not-fit", f"needs {req.gpus} {plural}{alt}; found {have or 'none'}")]
    probed = profile.source == "probe"
    options = {c: _gpu_check(req, c, counts[c], profile.gpus, probed) for c in usable}
    verdict_at = {c: _worst([v for v, _ in options[c]]) for c in usable}
    # Best verdict first; on a tie the preset's own GPU count, then the lower peak.
    best = min(usable, key=lambda c: (_SEVERITY[verdict_at[c]], c != req.gpus, counts[c]))
    runs = "runs" if verdict_at[best] != "does-not-fit" else "would run"
    head = f"{runs} on {best} of {have} {'GPU' if have == 1 else 'GPUs'}"
    if best != req.gpus:
        head += f" (--set gpus={best}; the preset's default is {req.gpus})"
    extra: list[Finding] = [
        ("fits", f"also runs on {c} GPUs at ~{fmt_gib(counts[c])} each (--set gpus={c})")
        for c in usable if c > best and verdict_at[c] == "fits"]
    return [("fits", head), *options[best], *extra]


def disk_needs(est: Estimate, profile: HardwareProfile) -> tuple[float, float]:
    """(GiB needed in the HF cache, GiB needed at the output folder): the run's writes land at
    the output folder, and the download too unless the profile says the HF cache is on another
    filesystem whose free space it knows (then the download is judged there)."""
    download = sum(split_download(est.disk_terms)[0].values())
    if download and profile.hf_cache_on_output_disk is False \
            and profile.hf_cache_free_gib is not None:
        return download, est.disk_gib - download
    return 0.0, est.disk_gib


def _disk_findings(est: Estimate, profile: HardwareProfile) -> list[Finding]:
    in_cache, need = disk_needs(est, profile)
    findings: list[Finding] = []
    if in_cache:
        cache_free = profile.hf_cache_free_gib or 0.0
        verdict, head = _headroom(in_cache, cache_free)
        findings.append((verdict, f"needs ~{fmt_gib(in_cache)} free in the HF cache (the model "
                                  f"download); {fmt_gib(cache_free)} free{head}"))
    verdict, head = _headroom(need, profile.disk_free_gib)
    findings.append((verdict, f"needs ~{fmt_gib(need)} free at {profile.output_dir}; "
                              f"{fmt_gib(profile.disk_free_gib)} free{head}"))
    return findings


def _host_findings(cfg: RunConfig, req: Requirements, profile: HardwareProfile) -> list[Finding]:
    why = " (CPU offload)" if cfg.distributed.cpu_offload else ""
    ram, ram_head = _headroom(req.host_ram_gib, profile.ram_gib)
    return [(ram, f"needs ~{fmt_gib(req.host_ram_gib)} host RAM{why}; "
                  f"the machine has {fmt_gib(profile.ram_gib)}{ram_head}")]


OTHER_GPU_COUNTS = (2, 4, 8)  # FSDP configs are also estimated at these counts


def requirements_of(cfg: RunConfig, est: Estimate, profile: HardwareProfile,
                    dataset: DatasetFacts | None = None, other_counts: bool = True
                    ) -> Requirements:
    """The estimate as a requirements block (what the verdict compares with the machine)."""
    by_gpus: dict[int, float] = {}
    if cfg.distributed.fsdp and est.gpus and other_counts:
        for count in OTHER_GPU_COUNTS:
            if count != cfg.distributed.gpus and count <= len(profile.gpus):
                other = cfg.model_copy(deep=True)
                other.distributed.gpus = count
                by_gpus[count] = estimate(other, profile, dataset=dataset
                                          ).min_peak_mem_gib_per_gpu
    return Requirements(gpus=est.gpus, peak_mem_gib_per_gpu=est.min_peak_mem_gib_per_gpu,
                        min_gpu_mem_gib=est.card_gib_needed if est.gpus else 0.0,
                        host_ram_gib=est.host_ram_gib, disk_gib=est.disk_gib,
                        peak_mem_gib_by_gpus=by_gpus, estimate=True,
                        source="estimated from the config (engine/plan/estimate.py, calibrated "
                               "on bench/calibration/)")


def judge(cfg: RunConfig, profile: HardwareProfile, dataset: DatasetFacts | None = None,
          other_counts: bool = True) -> PresetVerdict:
    """The verdict for one config on one machine; the reasons that decide it come first.
    other_counts: an FSDP config may also be judged at the other GPU counts the machine has."""
    est = estimate(cfg, profile, dataset=dataset)
    if not est.ok:
        return PresetVerdict(cfg.name, "tight", [str(est.problem)], False, cfg.description,
                             None, est)
    req = requirements_of(cfg, est, profile, dataset, other_counts)
    findings = _gpu_findings(req, profile) if req.gpus > 0 else [("fits", "runs on CPU")]
    findings += _host_findings(cfg, req, profile) + _disk_findings(est, profile)
    # Stable sort: worst findings first, otherwise in GPU, RAM, disk order.
    findings.sort(key=lambda f: -_SEVERITY[f[0]])
    reasons = [reason for _, reason in findings]
    if est.gpus and cfg.training.unchecked_layers == "auto" and est.unchecked_layers:
        reasons.append(f"unchecked_layers auto: {est.unchecked_layers} of {est.layers} layers "
                       f"keep activations, reserving ~{fmt_gib(est.peak_mem_gib_per_gpu)}")
    reasons.append("requirements are estimates")
    return PresetVerdict(cfg.name, _worst([v for v, _ in findings]), reasons, False,
                         cfg.description, req, est)


def hardware_needed(v: PresetVerdict) -> str:
    """'gpt-oss-20b-lora-1gpu needs 1 GPU with >= 47 GiB, ~32 GiB host RAM, ~60 GiB free disk'."""
    req = v.requirements
    if req is None:
        return f"{v.name} has no estimate"
    parts = []
    if req.gpus:
        card = max(req.min_gpu_mem_gib, req.peak_mem_gib_per_gpu)
        parts.append(f"{req.gpus} {'GPU' if req.gpus == 1 else 'GPUs'} with >= {fmt_gib(card)}")
    parts += [f"~{fmt_gib(req.host_ram_gib)} host RAM", f"~{fmt_gib(req.disk_gib)} free disk"]
    return f"{v.name} needs {', '.join(parts)}"


def _capability(name: str) -> int:
    return CAPABILITY.index(name) if name in CAPABILITY else len(CAPABILITY)


def _summary(pick: PresetVerdict | None, verdicts: list[PresetVerdict],
             profile: HardwareProfile) -> str:
    gpu_presets = [v for v in verdicts if v.requirements and v.requirements.gpus > 0]
    smallest_gpu = sorted(gpu_presets, key=lambda v: -_capability(v.name))[:2]
    would = "; or ".join(hardware_needed(v) for v in smallest_gpu)
    if pick is not None and pick.requirements and pick.requirements.gpus > 0:
        if pick.verdict == "fits":
            return f"{pick.name} is the most capable preset that fits this machine."
        return (f"{pick.name} fits with less than {TIGHT_HEADROOM:.0%} headroom (tight); "
                "no GPT-OSS preset fits outright.")
    if pick is not None:
        if not profile.gpus:
            why = f" ({profile.gpu_error})" if profile.gpu_error else ""
            head = f"No NVIDIA GPU found{why}; {pick.name} runs on CPU."
        else:
            head = f"No GPT-OSS preset fits this machine; {pick.name} runs on CPU."
        return f"{head} For GPT-OSS: {would}." if would else head
    cpu_misses = [hardware_needed(v) for v in verdicts
                  if v.requirements and v.requirements.gpus == 0]
    needs = "; ".join(x for x in [would, *cpu_misses] if x)
    return f"No preset fits this machine. {needs}." if needs else "No preset fits this machine."


def recommend(profile: HardwareProfile, presets: list[RunConfig] | None = None,
              facts: Callable[[RunConfig], DatasetFacts | None] | None = None) -> Recommendation:
    """A verdict for every preset (the shipped ones by default) and the one to recommend;
    `facts`: each config's dataset statistics (`--dataset`), when known."""
    if presets is None:
        from osstune.engine.plan.config import load_preset, preset_names

        presets = [load_preset(name) for name in preset_names()]
    verdicts = [judge(cfg, profile, facts(cfg) if facts else None) for cfg in presets]
    judged = sorted((v for v in verdicts if v.requirements is not None),
                    key=lambda v: _capability(v.name))
    gpu = [v for v in judged if v.requirements and v.requirements.gpus > 0]
    cpu = [v for v in judged if v.requirements and v.requirements.gpus == 0]
    pick = next((v for group in (gpu, cpu) for wanted in ("fits", "tight")
                 for v in group if v.verdict == wanted), None)
    if pick is not None:
        pick.recommended = True
    return Recommendation(verdicts, pick.name if pick else None, _summary(pick, verdicts, profile))
