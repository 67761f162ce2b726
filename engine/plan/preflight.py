"""Pre-flight checks before anything heavy is loaded: GPUs, disk, host RAM, the output folder.

Torch-free: `osstune run` calls it before launching, the engine again before loading (a direct
`python -m osstune.engine.trainer.train` gets the same answers). `--force` turns refusals into
warnings.
GPU memory, host RAM and disk are the estimate of this very config (engine/plan/estimate.py),
not a preset's fixed figures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from osstune.engine.plan import hardware
from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.estimate import estimate
from osstune.engine.plan.hardware import HardwareProfile, output_dir_problem, probe
from osstune.engine.plan.storage import split_download
from osstune.engine.plan.units import fmt_bytes, fmt_gib
from osstune.engine.session.run_folder import complete_checkpoints, holds_run


class PreflightError(RuntimeError):
    """The machine cannot run this config; one line per problem, each naming the setting."""


def uses_gpus(cfg: RunConfig) -> bool:
    return cfg.distributed.gpus > 0 and cfg.distributed.backend != "gloo"


def _terms(terms: dict[str, float]) -> str:
    return ", ".join(f"{name} {fmt_gib(value)}" for name, value in terms.items()
                     if value >= 0.05)


def disk_problems(terms: dict[str, float], output_dir: Path, what: str = "this config"
                  ) -> list[str]:
    """Each disk the terms land on against its free space: downloads go to the HF cache, the
    rest to `output_dir` (one check, of their sum, when both are on one filesystem)."""
    cache = hardware.hf_cache_dir()
    download, writes = split_download(terms)
    groups = [(output_dir, terms)]
    if download and not hardware.same_disk(output_dir, cache):
        groups = [(cache, download), (output_dir, writes)]
    problems = []
    for where, part in groups:
        need, free = sum(part.values()), hardware.free_gib(where)
        if free is not None and need and free < need:
            problems.append(f"disk: {fmt_gib(free)} free at {where}, {what} needs "
                            f"~{fmt_gib(need)} ({_terms(part)})")
    return problems


def machine_problems(cfg: RunConfig, profile: HardwareProfile, output_dir: Path,
                     resume: bool = False) -> list[str]:
    problems: list[str] = []
    dist = cfg.distributed
    on_disk = len(complete_checkpoints(output_dir)) if resume else 0
    est = estimate(cfg, profile, checkpoints_on_disk=on_disk)
    if uses_gpus(cfg):
        visible = len(profile.gpus)
        if dist.gpus > visible:
            why = f" ({profile.gpu_error})" if profile.gpu_error and not visible else ""
            problems.append(
                f"distributed.gpus: the config asks for {dist.gpus} GPU(s) per node, "
                f"{visible} visible{why}; lower it (--set gpus={visible}) or pick another preset")
        elif est.ok:
            small = [g for g in profile.gpus[: dist.gpus]
                     if g.memory_total_gib < est.card_gib_needed]
            if small:
                gpu = small[0]
                problems.append(
                    f"GPU {gpu.index} ({gpu.name}) has {fmt_gib(gpu.memory_total_gib)}; this "
                    f"config needs ~{fmt_gib(est.card_gib_needed)} per GPU (osstune plan shows "
                    "the terms)")
    if est.ok:
        problems += disk_problems(est.disk_terms, output_dir)
        if profile.ram_gib < est.host_ram_gib:
            why = " (CPU offload)" if dist.cpu_offload else ""
            problems.append(f"host RAM: {fmt_gib(profile.ram_gib)}, this config needs "
                            f"~{fmt_gib(est.host_ram_gib)}{why}")
    bad_dir = output_dir_problem(output_dir)
    if bad_dir:
        problems.append(bad_dir)
    return problems


def existing_run(output_dir: Path) -> bool:
    """The folder holds a run to keep (a finished checkpoint or a result); an attempt that
    failed before its first save does not (engine/session/run_folder.py)."""
    return holds_run(output_dir)


def preflight(cfg: RunConfig, output_dir: Path, *, resume: bool, force: bool,
              profile: HardwareProfile | None = None) -> list[str]:
    """Raise PreflightError unless forced; return the problems that --force waved through."""
    output_dir = Path(output_dir)
    profile = profile or probe(str(output_dir))
    problems = machine_problems(cfg, profile, output_dir, resume)
    if problems and not force:
        raise PreflightError("; ".join(problems) + " (--force runs anyway)")
    if not resume and not force and existing_run(output_dir):
        raise PreflightError(
            f"output directory {output_dir} already holds a run; use --resume to continue it, "
            "--output for a new folder, or --force to start over there")
    return problems


def save_space(folder: Path, needed_bytes: int) -> tuple[int, str | None]:
    """Before each checkpoint: (free bytes at `folder`, a problem line when they are too few).

    The engine calls it with the bytes the save will write (all ranks' shards); a folder whose
    free space cannot be read counts as roomy (the write itself still reports a full disk).
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return -1, None
    if free >= needed_bytes:
        return free, None
    return free, (f"disk: the checkpoint needs ~{fmt_bytes(needed_bytes)}, {fmt_bytes(free)} free "
                  f"at {folder}")

