"""Pre-flight checks before anything heavy is loaded: GPUs, disk, host RAM, the output folder.

Torch-free: `osstune run` calls it before launching, the engine again before loading (a direct
`python -m engine.trainer.train` gets the same answers). `--force` turns refusals into warnings.
"""

from __future__ import annotations

from pathlib import Path

from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.hardware import HardwareProfile, free_gib, output_dir_problem, probe
from osstune.engine.plan.units import fmt_gib
from osstune.engine.session.events import EVENTS_FILE


class PreflightError(RuntimeError):
    """The machine cannot run this config; one line per problem, each naming the setting."""


def uses_gpus(cfg: RunConfig) -> bool:
    return cfg.distributed.gpus > 0 and cfg.distributed.backend != "gloo"


def machine_problems(cfg: RunConfig, profile: HardwareProfile, output_dir: Path) -> list[str]:
    problems: list[str] = []
    dist, req = cfg.distributed, cfg.requirements
    if uses_gpus(cfg):
        visible = len(profile.gpus)
        if dist.gpus > visible:
            why = f" ({profile.gpu_error})" if profile.gpu_error and not visible else ""
            problems.append(
                f"distributed.gpus: the config asks for {dist.gpus} GPU(s) per node, "
                f"{visible} visible{why}; lower it (--set gpus={visible}) or pick another preset")
        elif req and req.min_gpu_mem_gib:
            small = [g for g in profile.gpus[: dist.gpus]
                     if g.memory_total_gib < req.min_gpu_mem_gib]
            if small:
                gpu = small[0]
                problems.append(
                    f"GPU {gpu.index} ({gpu.name}) has {fmt_gib(gpu.memory_total_gib)}; "
                    f"this preset needs {fmt_gib(req.min_gpu_mem_gib)} per GPU")
    if req:
        free = free_gib(output_dir)
        if free is not None and req.disk_gib and free < req.disk_gib:
            problems.append(f"disk: {fmt_gib(free)} free at {output_dir}, this preset needs "
                            f"~{fmt_gib(req.disk_gib)} (checkpoints and export)")
        if dist.cpu_offload and req.host_ram_gib and profile.ram_gib < req.host_ram_gib:
            problems.append(f"host RAM: {fmt_gib(profile.ram_gib)}, CPU offload needs "
                            f"~{fmt_gib(req.host_ram_gib)}")
    bad_dir = output_dir_problem(output_dir)
    if bad_dir:
        problems.append(bad_dir)
    return problems


def existing_run(output_dir: Path) -> bool:
    return (output_dir / EVENTS_FILE).is_file() or (output_dir / "checkpoints").is_dir()


def preflight(cfg: RunConfig, output_dir: Path, *, resume: bool, force: bool,
              profile: HardwareProfile | None = None) -> list[str]:
    """Raise PreflightError unless forced; return the problems that --force waved through."""
    output_dir = Path(output_dir)
    profile = profile or probe(str(output_dir))
    problems = machine_problems(cfg, profile, output_dir)
    if problems and not force:
        raise PreflightError("; ".join(problems) + " (--force runs anyway)")
    if not resume and not force and existing_run(output_dir):
        raise PreflightError(
            f"output directory {output_dir} already holds a run; use --resume to continue it, "
            "--output for a new folder, or --force to start over there")
    return problems
