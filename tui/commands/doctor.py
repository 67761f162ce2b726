"""`osstune doctor`: what this machine has for training (GPUs, RAM, CPUs, disk); table or JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from osstune.tui import output

if TYPE_CHECKING:
    from osstune.engine.plan.hardware import GpuLink, HardwareProfile


def _opt(value: float | None, unit: str = " GiB", digits: int = 1) -> str:
    if value is None:
        return "-"
    return output.fmt_gib(value) if unit == " GiB" else f"{value:.{digits}f}{unit}"


def _flag(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "-"}[value]


def describe_links(links: list[GpuLink]) -> str:
    """'all 28 GPU pairs, over NVLink' / 'no P2P between GPUs 0-1' / 'not reported'."""
    if not links:
        return "-"
    known = [link for link in links if link.p2p is not None]
    if not known:
        return "not reported by NVML"
    missing = [f"{link.gpu_a}-{link.gpu_b}" for link in known if not link.p2p]
    if missing:
        return f"no P2P between GPUs {', '.join(missing)}"
    nvlink = all(link.nvlink for link in links)
    over = ", over NVLink" if nvlink else ""
    return f"all {len(links)} GPU {'pair' if len(links) == 1 else 'pairs'}{over}"


def resolve_profile(ctx: typer.Context, hardware: str | None, output_dir: str | None
                    ) -> HardwareProfile:
    """The profile file named by --hardware (here or before the command), else a probe."""
    from osstune.engine.plan.hardware import HardwareProfileError, load_profile, probe

    hardware = hardware or (ctx.obj or {}).get("hardware")
    if hardware:
        try:
            profile = load_profile(hardware)
        except HardwareProfileError as e:
            output.fail(str(e))
        if output_dir:
            profile.output_dir = output_dir
        return profile
    return probe(output_dir or "./outputs")


def best_preset(profile: HardwareProfile) -> tuple[str, str] | None:
    """(preset, verdict) `osstune presets` recommends for this profile; None when none fits."""
    from osstune.engine.plan.recommend import recommend

    pick = next((v for v in recommend(profile).verdicts if v.recommended), None)
    return (pick.name, pick.verdict) if pick else None


def _best_cell(best: tuple[str, str] | None) -> str:
    if best is None:
        return "none fits (osstune presets says why)"
    return f"{best[0]} ({best[1]}; osstune presets says why)"


def render(profile: HardwareProfile, output_dir_problem: str | None = None) -> None:
    from osstune.engine.plan.hardware import hf_cache_dir, nearest_existing

    if profile.gpus:
        rows = [[str(g.index), g.name, _opt(g.memory_total_gib), _opt(g.memory_free_gib),
                 _opt(g.memory_used_gib), _opt(g.utilization_pct, "%", 0),
                 g.compute_capability or "-", _flag(g.nvlink)] for g in profile.gpus]
        output.print_table(["GPU", "Name", "Memory", "Free", "Used", "Util", "CC", "NVLink"],
                           rows, title="GPUs")
    else:
        output.print_line((f"GPUs: none ({profile.gpu_error or 'no reason given'})", "yellow"))
    probed = profile.source == "probe"
    disk_where = profile.output_dir
    if probed:
        disk_where += f" (on {nearest_existing(profile.output_dir)})"
    cache = f" at {hf_cache_dir()}" if probed else ""
    available = (f", {_opt(profile.ram_available_gib)} available"
                 if profile.ram_available_gib is not None else "")
    machine: list[list[output.Cell]] = [
        ["NVIDIA driver", profile.driver_version or "-"],
        ["CUDA (driver)", profile.cuda_version or "-"],
        ["GPU peer-to-peer", describe_links(profile.gpu_links)],
        ["CPUs", str(profile.cpu_count)],
        ["RAM", f"{_opt(profile.ram_gib)}{available}"],
        ["Disk free", f"{_opt(profile.disk_free_gib)} at {disk_where}"],
        ["HF cache free", f"{_opt(profile.hf_cache_free_gib)}{cache}"],
        ["Models cached", "-" if profile.hf_cached_models is None
         else ", ".join(profile.hf_cached_models) or "none (a run downloads its weights)"],
        ["Source", "this machine" if probed else profile.source],
        ["Recommended", _best_cell(best_preset(profile))],
    ]
    if output_dir_problem:
        machine.append(["Output dir", (output_dir_problem, "bold red")])
    output.print_table(None, machine, title="Machine")


def doctor(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print the profile as JSON "
                                        "(loadable again with --hardware)")] = False,
    output_dir: Annotated[str | None, typer.Option(
        "--output-dir", help="Where training would write (checks free space and write access)",
        show_default="./outputs")] = None,
    hardware: Annotated[str | None, typer.Option(
        "--hardware", help="Show a hardware profile file (JSON) instead of probing")] = None,
) -> None:
    """Show this machine's GPUs, RAM, CPUs and free disk: what decides which preset fits."""
    from osstune.engine.plan.hardware import output_dir_problem, profile_to_dict

    profile = resolve_profile(ctx, hardware, output_dir)
    problem = output_dir_problem(profile.output_dir) if profile.source == "probe" else None
    if json_:
        data = profile_to_dict(profile)
        data["output_dir_problem"] = problem
        best = best_preset(profile)  # extra keys are ignored when the file is loaded back
        data["recommended_preset"] = best[0] if best else None
        output.print_json(data)
    else:
        render(profile, problem)
    if problem:
        output.fail(problem, output.EXIT_PROBLEM)
