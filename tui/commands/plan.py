"""`osstune plan PRESET|CONFIG`: the estimate of one run on this machine (or a profile), its terms,
and for a config that does not fit the nearest changes that would. No torch: answers in well under
a second (with --dataset, after reading and tokenizing the dataset as the engine would)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from osstune.engine.plan.units import fmt_duration
from osstune.tui import output
from osstune.tui.commands.doctor import resolve_profile

if TYPE_CHECKING:
    from osstune.engine.plan.estimate import Estimate
    from osstune.engine.plan.recommend import PresetVerdict
    from osstune.engine.plan.suggest import Suggestion


def plan_dict(v: PresetVerdict, suggested: list[Suggestion]) -> dict[str, Any]:
    est = v.estimate
    if est is None or not est.ok:
        problem = est.problem if est else v.reasons[0]
        return {"name": v.name, "verdict": problem, "reasons": v.reasons, "suggestions": []}
    return {
        "name": v.name, "verdict": v.verdict,
        "peak_mem_gib_per_gpu": est.peak_mem_gib_per_gpu,
        "min_peak_mem_gib_per_gpu": est.min_peak_mem_gib_per_gpu,
        "gpus": est.gpus, "unchecked_layers": est.unchecked_layers,
        "pack_len": est.pack_len, "pack_len_reason": est.pack_len_reason,
        "host_ram_gib": est.host_ram_gib, "disk_gib": est.disk_gib,
        "tokens_per_s": est.tokens_per_s, "time_s": est.time_s, "train_tokens": est.train_tokens,
        "terms": est.gpu_terms, "host_terms": est.host_terms, "disk_terms": est.disk_terms,
        "speed_terms_us_per_token": est.speed_terms_us, "assumptions": est.assumptions,
        "reasons": v.reasons,
        "suggestions": [s.__dict__ for s in suggested],
    }


def terms_rows(title: str, total: float, terms: dict[str, float]) -> list[list[output.Cell]]:
    from osstune.engine.plan.recommend import fmt_gib

    rows: list[list[output.Cell]] = [[(title, "bold"), (f"~{fmt_gib(total)}", "bold")]]
    rows += [[f"  {name}", f"{value:.2f} GiB"] for name, value in terms.items()]
    return rows


def _print(v: PresetVerdict, est: Estimate, suggested: list[Suggestion]) -> None:
    from osstune.tui.render.verdict import verdict_style

    output.print_line((f"{v.name}: {v.verdict}", verdict_style(v.verdict, bold=True)))
    rows: list[list[output.Cell]] = []
    if est.gpus:
        title = "GPU memory per GPU (reserved)"
        if est.min_peak_mem_gib_per_gpu != est.peak_mem_gib_per_gpu:
            title += (f"; {est.unchecked_layers} of {est.layers} layers unchecked (auto), "
                      f"all checkpointed: {output.fmt_gib(est.min_peak_mem_gib_per_gpu)}")
        rows += terms_rows(title, est.peak_mem_gib_per_gpu, est.gpu_terms)
    rows += terms_rows("host RAM", est.host_ram_gib, est.host_terms)
    rows += terms_rows("disk", est.disk_gib, est.disk_terms)
    output.print_table(None, rows)
    output.print_line(f"rows: pack_len {est.pack_len:,} tokens ({est.pack_len_reason})")
    if est.tokens_per_s:
        line = f"speed: ~{est.tokens_per_s:,.0f} tokens/s"
        if est.time_s is not None:
            line += f", ~{fmt_duration(est.time_s)} for {est.train_tokens:,.0f} tokens"
        output.print_line(line)
    for reason in v.reasons:
        output.print_line(f"  {reason}")
    for note in est.assumptions:
        output.print_line((f"  assumed: {note}", "dim"))
    if v.verdict == "does-not-fit" and not suggested:
        output.print_line("No change of one or two settings that apply to this config makes it "
                          "fit this machine.")
    if suggested:
        output.print_line("Nearest changes that fit:")
        for s in suggested:
            sets = " ".join(f"--set {c}" for c in s.changes)
            speed = f", ~{s.tokens_per_s:,.0f} tokens/s" if s.tokens_per_s else ""
            output.print_line(f"  {sets}: {s.verdict}, ~{output.fmt_gib(s.peak_mem_gib_per_gpu)} "
                              f"per GPU, ~{output.fmt_gib(s.disk_gib)} disk{speed}")


def plan(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="PRESET|CONFIG.yaml",
                                          help="A preset name or a run config file")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set sequence_len=8192"),
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset file, folder or hub id")
                       ] = None,
    hardware: Annotated[str | None, typer.Option(
        "--hardware", help="Plan for a hardware profile (JSON) instead of this machine")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    output_dir: Annotated[str | None, typer.Option(
        "--output-dir", help="Where training would write (free disk is checked there)")] = None,
) -> None:
    """Estimate GPU memory, host RAM, disk and time of a run, term by term; what would fit."""
    from osstune.engine.plan.config import ConfigError, load_config
    from osstune.engine.plan.recommend import judge
    from osstune.engine.plan.suggest import suggestions

    try:
        cfg = load_config(target, list(set_ or []))
        if dataset is not None:
            cfg.dataset.path = dataset
    except ConfigError as e:
        output.fail(str(e))
    except ValueError as e:  # pydantic assignment validation
        output.fail(f"{target}: {e}")
    profile = resolve_profile(ctx, hardware, output_dir or cfg.output.dir)
    facts = None
    if dataset is not None:  # its statistics, read as the engine reads them
        from osstune.tui.commands.inspect import dataset_facts

        facts = dataset_facts(cfg, profile)
    v = judge(cfg, profile, facts)
    est = v.estimate
    needed = est is not None and est.ok and v.verdict == "does-not-fit"
    suggested = suggestions(cfg, profile, facts, est) if needed else []
    if json_:
        output.print_json(plan_dict(v, suggested))
        return
    if est is None or not est.ok:
        output.fail(f"{cfg.name}: {v.reasons[0]}", output.EXIT_PROBLEM)
    _print(v, est, suggested)
