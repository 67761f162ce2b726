"""`osstune inspect DATASET`: exactly which tokens of each example are trained, and a summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from osstune.tui import output
from osstune.tui.render.tokens import PLAIN_CLOSE, PLAIN_OPEN, render_plain, render_wrapped

if TYPE_CHECKING:
    from osstune.engine.data.dataset import DatasetStats, Example
    from osstune.engine.data.dataset_mix import TrainingData
    from osstune.engine.plan.config import RunConfig
    from osstune.engine.plan.estimate import DatasetFacts
    from osstune.engine.plan.hardware import HardwareProfile
    from osstune.engine.plan.packlen import PackLen

DEFAULT_VIEW_COUNT = 3


def _config(dataset: str | None, config: str | None, preset: str | None,
            overrides: list[str]) -> RunConfig:
    from osstune.engine.plan.config import ConfigError, ModelConfig, RunConfig, load_config

    if config and preset:
        output.fail("give --config or --preset, not both")
    if not (dataset or config or preset):
        output.fail("give a DATASET (file, folder, hub id or builtin:osstune-sample) "
                    "or --config/--preset")
    try:
        cfg = load_config(config or preset, overrides) if (config or preset) else None
        if cfg is None:
            from osstune.engine.plan.config import apply_overrides, validate

            base = RunConfig(model=ModelConfig(id="openai/gpt-oss-20b")).model_dump(mode="json")
            cfg = validate(apply_overrides(base, overrides), "inspect defaults")
        if dataset:
            cfg.dataset.path = dataset
    except ConfigError as e:
        output.fail(str(e))
    return cfg


# In JSON output, control characters JSON itself leaves raw (DEL, C1, bidi overrides) as \uXXXX.
_JSON_UNSAFE = {c: f"\\u{c:04x}" for c in [0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F),
                                             *range(0x2066, 0x206A)]}


def json_line(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False).translate(_JSON_UNSAFE)


def _header(position: int, ex: Example) -> str:
    trained = ex.trained_tokens
    turn = f" · turn {ex.turn}" if ex.turn is not None else ""
    return (f"── example {position} · row {ex.row}{turn} · {output.plural(len(ex), 'token')} · "
            f"{trained:,} trained "
            f"({100 * trained / max(len(ex), 1):.1f}%)")


def summary_lines(stats: DatasetStats, sequence_len: int, pack: PackLen | None = None
                  ) -> list[str]:
    from osstune.tui.render.run import skip_reasons

    skipped = sum(stats.rows_skipped.values())
    lines = [
        f"dataset: {output.safe_text(stats.source, one_line=True)} ({stats.format})",
        f"rows read: {stats.rows_read:,}",
        f"rows skipped: {skipped:,}"
        + (f" ({skip_reasons(stats.rows_skipped)})" if skipped else ""),
        f"examples: {stats.examples:,}"
        + (f" ({stats.examples_truncated:,} truncated to {sequence_len})"
           if stats.examples_truncated else ""),
        f"tokens: {stats.tokens_total:,} total, {stats.tokens_trained:,} trained "
        f"({100 * stats.trained_fraction:.1f}%)",
        "length buckets: " + ", ".join(f"{k}: {v}" for k, v in stats.length_buckets.items()),
    ]
    if stats.rows_empty_answer:
        rows = output.plural(stats.rows_empty_answer, "row")
        lines.append(f"reasoning with an empty answer: {rows} (trained as analysis + an empty "
                     "final answer, as openai-harmony renders it)")
    if stats.packing_efficiency is not None:
        length = pack.length if pack else sequence_len
        why = f" (pack_len {pack.why})" if pack and pack.reason != "sequence_len" else ""
        lines.append(f"packing: {output.plural(stats.packed_rows or 0, 'row')} of {length} "
                     f"tokens, {100 * stats.packing_efficiency:.1f}% filled{why}")
    else:
        lines.append("packing: off")
    lines += [f"  skipped {output.safe_text(s, one_line=True)}" for s in stats.skip_samples[:5]]
    from osstune.tui.render.run import dataset_lines

    return lines + dataset_lines({"sources": stats.sources, "validation": stats.validation})


def planned_pack_len(ctx: typer.Context, cfg: RunConfig, prepared: TrainingData) -> PackLen:
    """The row length the run would pack at here (`pack_len: auto` sized for this machine's card,
    or --hardware's), with the packing figures of `prepared` redone at that length."""
    from osstune.tui.commands.doctor import resolve_profile

    profile = resolve_profile(ctx, None, None) if cfg.training.pack_len == "auto" else None
    return packed_facts(cfg, profile, prepared)[1]


def packed_facts(cfg: RunConfig, profile: HardwareProfile | None, prepared: TrainingData
                 ) -> tuple[DatasetFacts, PackLen]:
    """What the estimate needs of `prepared`, as the engine reads it (engine/trainer/batches.py
    resolve_pack_len: its tokens and examples choose the row length on `profile`'s card), with
    the packing figures redone at that length."""
    from osstune.engine.data.dataset_mix import pack_stats
    from osstune.engine.plan.estimate import DatasetFacts, pack_len_on

    stats, t = prepared.stats, cfg.training
    facts = DatasetFacts(tokens_total=stats.tokens_total, examples=stats.examples)
    pack = pack_len_on(cfg, profile, facts)
    if cfg.dataset.packing:  # at the chosen length (`prepared` may serve several configs)
        pack_stats(stats, prepared.train, pack.length, t.seed)
    facts.packing_efficiency = stats.packing_efficiency
    facts.mean_example_tokens = stats.tokens_total / stats.examples if stats.examples else None
    return facts, pack


@dataclass
class DatasetReads:
    """What `presets --dataset` read for several configs: each way of reading the dataset once
    (tokenizer, dataset settings, length, seed), and each skipped-rows warning said once."""

    prepared: dict[tuple[str, ...], TrainingData] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)


def dataset_facts(cfg: RunConfig, profile: HardwareProfile, reads: DatasetReads | None = None
                  ) -> DatasetFacts:
    """`osstune plan/presets --dataset`: read and tokenize the dataset as the engine would (bad
    input ends the command: exit 2) and return its statistics for the estimate."""
    key = (cfg.model.tokenizer or cfg.model.id, cfg.dataset.model_dump_json(),
           str(cfg.training.sequence_len), str(cfg.training.seed))
    reads = reads or DatasetReads()
    if key not in reads.prepared:
        reads.prepared[key] = _prepare(cfg, None, reads.warned)[1]
    return packed_facts(cfg, profile, reads.prepared[key])[0]


def inspect(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Argument(
        help="A .jsonl/.json/.parquet file or folder, a hub id, or builtin:osstune-sample")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", help="Dataset settings (and model) from this run config (YAML)")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Take the dataset settings (and model) from this preset")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a config key, e.g. dataset.train_turns=expand")] = None,
    index: Annotated[int, typer.Option(
        "--index", min=0,
        help="First example to show (examples count from 0; rows, like lines, from 1)")] = 0,
    count: Annotated[int | None, typer.Option(
        "--count", min=0, help="How many examples to show (default 3; with --json all)")] = None,
    show_ids: Annotated[bool, typer.Option("--show-ids", help="Print each token's id")] = False,
    json_: Annotated[bool, typer.Option(
        "--json", help='One JSON line per example: {"row" (1-based), "input_ids", "labels", "text"}'
    )] = False,
    tokenizer_name: Annotated[str | None, typer.Option(
        "--tokenizer", help="Tokenizer id or folder (default: the config's model; the offline "
        "GPT-OSS tokenizer when offline)")] = None,
) -> None:
    """Show which tokens of each example are trained (highlighted) and which are prompt (dim)."""
    cfg = _config(dataset, config, preset, list(set_ or []))
    tokenizer, prepared = _prepare(cfg, tokenizer_name)
    examples = prepared.train
    if index >= len(examples):
        output.fail(f"--index {index}: the dataset has {output.plural(len(examples), 'example')} "
                    f"(0-{len(examples) - 1})")
    if count is None:
        count = len(examples) if json_ else DEFAULT_VIEW_COUNT
    chosen = list(enumerate(examples[index:index + count], start=index))
    if json_:
        for _pos, ex in chosen:
            typer.echo(json_line({"row": ex.row, "input_ids": ex.input_ids, "labels": ex.labels,
                                  "text": tokenizer.decode(ex.input_ids)}))
        return
    _print_examples(tokenizer, chosen, show_ids)
    pack = planned_pack_len(ctx, cfg, prepared)
    for line in summary_lines(prepared.stats, cfg.training.sequence_len, pack):
        typer.echo(line)


def _prepare(cfg: RunConfig, tokenizer_name: str | None, warned: set[str] | None = None
             ) -> tuple[Any, TrainingData]:
    """The tokenizer and the prepared dataset; skipped rows are one line on stderr (so stdout
    stays JSON with --json), once per text in `warned`. Bad input ends the command (exit 2)."""
    from osstune.engine.data.dataset import DatasetError
    from osstune.engine.data.dataset_mix import prepare_training_data
    from osstune.engine.data.tokenizer import TokenizerError, load_tokenizer
    from osstune.tui.render.run import skipped_rows_line

    try:
        tokenizer = load_tokenizer(tokenizer_name or cfg.model.tokenizer or cfg.model.id)
    except TokenizerError as e:
        output.fail(str(e))
    try:
        prepared = prepare_training_data(cfg, tokenizer)
    except DatasetError as e:
        output.fail(str(e))  # bad input: exit 2
    skipped = skipped_rows_line(prepared.stats.as_dict())
    if skipped and skipped not in (warned if warned is not None else ()):
        output.warn(output.safe_text(skipped, one_line=True))
        if warned is not None:
            warned.add(skipped)
    return tokenizer, prepared


def _print_examples(tokenizer: Any, chosen: list[tuple[int, Example]], show_ids: bool) -> None:
    from osstune.engine.data.token_view import token_view

    colour = output.use_color()
    console = output.console() if colour else None
    for pos, ex in chosen:
        views = token_view(tokenizer, ex)
        if console is not None:
            console.print(_header(pos, ex), style="bold")
            console.print(render_wrapped(views, show_ids))
            console.print()
        else:
            typer.echo(_header(pos, ex))
            typer.echo(render_plain(views, show_ids))
            typer.echo("")
    typer.echo("legend: trained tokens highlighted, prompt tokens dim, special tokens cyan"
               if colour else f"legend: {PLAIN_OPEN}trained{PLAIN_CLOSE}, everything else is "
               "prompt")
