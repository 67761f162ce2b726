"""`osstune presets`: every preset with its verdict on this machine (or a profile file) and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from osstune.tui import output
from osstune.tui.commands.doctor import resolve_profile
from osstune.tui.render.verdict import verdict_style

if TYPE_CHECKING:
    from collections.abc import Callable

    from osstune.engine.plan.config import RunConfig
    from osstune.engine.plan.estimate import DatasetFacts
    from osstune.engine.plan.hardware import HardwareProfile
    from osstune.engine.plan.recommend import PresetVerdict

def verdict_to_dict(v: PresetVerdict) -> dict[str, Any]:
    return {
        "name": v.name,
        "verdict": v.verdict,
        "reasons": list(v.reasons),
        "recommended": v.recommended,
        "description": v.description,
        "requirements": v.requirements.model_dump(mode="json") if v.requirements else None,
        "estimate": v.estimate.as_dict() if v.estimate else None,
    }


def describe_hardware(profile: HardwareProfile) -> str:
    """'2x NVIDIA GeForce RTX 4090 (24.0 GiB), 252 GiB RAM, 1.6 TiB free at ./outputs'."""
    from osstune.engine.plan.recommend import fmt_gib

    kinds: dict[tuple[str, float], int] = {}
    for g in profile.gpus:
        kinds[(g.name, g.memory_total_gib)] = kinds.get((g.name, g.memory_total_gib), 0) + 1
    gpus = ", ".join(f"{n}x {name} ({fmt_gib(mem)})" for (name, mem), n in kinds.items())
    return (f"{gpus or 'no GPU'}, {fmt_gib(profile.ram_gib)} RAM, {profile.cpu_count} CPUs, "
            f"{fmt_gib(profile.disk_free_gib)} free at {profile.output_dir}")


def effective_configs(names: list[str], overrides: list[str], dataset: str | None
                      ) -> list[RunConfig]:
    """Each preset or config file with the `--set` overrides and `--dataset`: what a run with
    the same options would use (and so what is judged). Bad input ends the command."""
    from osstune.engine.plan.config import ConfigError, load_config

    configs = []
    for name in names:
        try:
            cfg = load_config(name, overrides)
            if dataset is not None:
                cfg.dataset.path = dataset
        except ConfigError as e:
            output.fail(str(e))
        except ValueError as e:  # pydantic assignment validation
            output.fail(f"{name}: {e}")
        configs.append(cfg)
    return configs


def config_text(name: str | None, overrides: list[str], dataset: str | None) -> str:
    """A preset's own file (its comments say where each figure comes from), or, for a config
    file or with --set/--dataset, the config as validated: complete, `osstune run FILE` takes it
    as it is."""
    from osstune.engine.plan.config import ConfigError, dump_config, preset_names, preset_text

    if not name:
        output.fail("give a preset name (osstune presets lists them) or a config file")
    if name in preset_names() and not overrides and dataset is None:
        try:
            return preset_text(name)
        except ConfigError as e:
            output.fail(str(e))
    return dump_config(effective_configs([name], overrides, dataset)[0])


def emit_config(text: str, out_file: str | None) -> None:
    """On stdout, or into a new file (an existing one is never overwritten)."""
    from pathlib import Path

    if out_file is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    path = Path(out_file)
    if path.exists():
        output.fail(f"-o {out_file}: already exists; choose another name (nothing is overwritten)")
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as e:
        output.fail(f"-o {out_file}: cannot write it ({e.strerror or e})")
    output.print_line(f"wrote {path}: edit it, then `osstune run {path}`")


SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config key, as `osstune run --set` would")]
DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", help="Dataset file, folder or hub id, as `osstune run --dataset` would")]


def config(
    name: Annotated[str, typer.Argument(metavar="PRESET|CONFIG.yaml",
                                        help="A preset name or a run config file")],
    out_file: Annotated[str | None, typer.Option(
        "-o", "--out", metavar="FILE", help="Write it to FILE (a new file) instead of stdout")
    ] = None,
    set_: SetOpt = None,
    dataset: DatasetOpt = None,
) -> None:
    """Print a preset as an editable run config (the same as `osstune presets NAME --yaml`)."""
    emit_config(config_text(name, list(set_ or []), dataset), out_file)


def presets(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        help="Show only this preset, or check a config file (YAML) against the hardware")] = None,
    hardware: Annotated[str | None, typer.Option(
        "--hardware", help="Plan for a hardware profile (JSON) instead of this machine")] = None,
    json_: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list: name, verdict, reasons, recommended, ...")] = False,
    output_dir: Annotated[str | None, typer.Option(
        "--output-dir", help="Where training would write (free disk is checked there)",
        show_default="./outputs")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE",
        help="Judge with this override, as `osstune run --set` would run it")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Judge with this dataset, as `osstune run --dataset` would")] = None,
    yaml_: Annotated[bool, typer.Option(
        "--yaml", help="Print NAME as an editable run config (save it, edit it, osstune run it)"
    )] = False,
) -> None:
    """List the presets with a verdict (fits / tight / does-not-fit), reasons and the pick."""
    if yaml_:
        if not name:
            output.fail("--yaml needs a preset name (osstune presets lists them) or a config file")
        emit_config(config_text(name, list(set_ or []), dataset), None)
        return
    from osstune.engine.plan.config import preset_names
    from osstune.engine.plan.hardware import output_dir_problem
    from osstune.engine.plan.recommend import judge, recommend

    if output_dir and not (hardware or (ctx.obj or {}).get("hardware")):
        problem = output_dir_problem(output_dir)
        if problem:
            output.fail(problem)
    profile = resolve_profile(ctx, hardware, output_dir)
    overrides = list(set_ or [])
    rec = None
    facts = _facts_lookup(profile) if dataset is not None else None
    if name and (name not in preset_names() or overrides or dataset is not None):
        verdicts = [judge(cfg, profile, facts(cfg) if facts else None)
                    for cfg in effective_configs([name], overrides, dataset)]
    else:
        rec = recommend(profile, effective_configs(preset_names(), overrides, dataset), facts)
        verdicts = [v for v in rec.verdicts if v.name == name] if name else rec.verdicts
    if json_:
        output.print_json([verdict_to_dict(v) for v in verdicts])
        return
    _print_verdicts(profile, verdicts, rec.summary if rec is not None else None)


def _facts_lookup(profile: HardwareProfile) -> Callable[[RunConfig], DatasetFacts | None]:
    """The dataset read as each preset's run would read it (its tokens bound pack_len auto),
    once per way of reading it; a CPU estimate has no use for them."""
    from osstune.tui.commands.inspect import DatasetReads, dataset_facts

    reads = DatasetReads()

    def facts(cfg: RunConfig) -> DatasetFacts | None:
        return dataset_facts(cfg, profile, reads) if cfg.distributed.gpus else None

    return facts


def _print_verdicts(profile: HardwareProfile, verdicts: list[PresetVerdict],
                    summary: str | None) -> None:
    """The presets table: name, verdict (the pick marked), reasons; then the pick's summary."""
    from osstune.engine.plan.recommend import TIGHT_HEADROOM

    source = "" if profile.source == "probe" else f"  [{profile.source}]"
    output.print_line(f"Hardware: {describe_hardware(profile)}{source}")
    rows: list[list[output.Cell]] = []
    for v in verdicts:
        label = v.verdict + ("\nrecommended" if v.recommended else "")
        rows.append([(v.name, "bold" if v.recommended else ""),
                     (label, verdict_style(v.verdict, bold=True)), "\n".join(v.reasons)])
    output.print_table(["Preset", "Verdict", "Why"], rows, lines=True)
    if summary is not None:
        output.print_line(summary)
    output.print_line(f"tight = fits with less than {TIGHT_HEADROOM:.0%} headroom on a resource.")
