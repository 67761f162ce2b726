"""The data pipeline: rows -> validated chats -> harmony examples with masks -> packed rows.

`prepare_dataset(cfg, tokenizer)` reads the configured dataset, validates every row (policy
`skip` counts and reports bad rows, `fail` stops at the first one), renders and masks, applies the
over-length policy and returns the examples with statistics. Work is batched (one tokenizer call
per batch), spread over processes for big datasets, and cached on disk by dataset fingerprint +
tokenizer + settings. `pack_examples` (packing.py) packs examples into fixed-length rows whose
position ids restart at 0 per example. No torch import here: the wizard previews data in a worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from osstune.engine.data.chat import Chat, RowError
from osstune.engine.data.dataset_cache import load_cached, save_cached
from osstune.engine.data.dataset_formats import (
    NO_TRAINED_TOKENS,
    NOT_JSON,
    TOO_LONG,
    WRONG_CONTENT_TYPE,
    FormatOptions,
    detect_format,
    row_to_chat,
)
from osstune.engine.data.dataset_sources import (
    DATASET_BUILTIN_SAMPLE,
    BadRow,
    DatasetError,
    read_source,
)
from osstune.engine.data.harmony import Example, HarmonyRenderer, RenderSettings
from osstune.engine.data.packing import PAD_ID, PackedRow, _pack_bins, pack_examples
from osstune.engine.data.token_view import TokenView, token_view
from osstune.engine.plan.units import plural

__all__ = [
    "DATASET_BUILTIN_SAMPLE",
    "DatasetError",
    "PAD_ID",
    "DatasetStats",
    "Example",
    "PackedRow",
    "PreparedDataset",
    "TokenView",
    "pack_examples",
    "prepare_dataset",
    "prepare_rows",
    "token_view",
]

BATCH_ROWS = 256
PARALLEL_MIN_ROWS = 4096  # below this, process start-up costs more than it saves
SKIP_SAMPLES = 20


@dataclass
class DatasetStats:
    rows_read: int = 0
    rows_skipped: dict[str, int] = field(default_factory=dict)
    examples: int = 0
    tokens_total: int = 0
    tokens_trained: int = 0
    length_buckets: dict[str, int] = field(default_factory=dict)
    packing_efficiency: float | None = None
    packed_rows: int | None = None
    examples_truncated: int = 0
    # Rows with an assistant message that has reasoning but an empty answer: trained as the
    # analysis followed by an empty final message, as openai-harmony and the model's template do.
    rows_empty_answer: int = 0
    skip_samples: list[str] = field(default_factory=list)  # first few "row N (line L): reason"
    format: str = ""
    source: str = ""
    # A mix of several datasets (engine/data/dataset_mix.py): one stats dict per source, and the
    # validation split ({"source", "examples", "tokens_trained"}) when there is one.
    sources: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None

    @property
    def trained_fraction(self) -> float:
        return self.tokens_trained / self.tokens_total if self.tokens_total else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trained_fraction"] = round(self.trained_fraction, 6)
        return d


@dataclass
class PreparedDataset:
    examples: list[Example]
    stats: DatasetStats


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that changes the prepared examples (and therefore the cache key)."""

    format_options: FormatOptions
    render: RenderSettings
    sequence_len: int
    overlength: str = "drop"  # drop | truncate
    invalid_rows: str = "skip"  # skip | fail
    max_rows: int | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> PipelineSettings:
        ds = cfg.dataset
        return cls(
            format_options=FormatOptions.from_dataset_config(ds),
            render=RenderSettings.from_dataset_config(ds),
            sequence_len=cfg.training.sequence_len,
            overlength=ds.overlength,
            invalid_rows=ds.invalid_rows,
            max_rows=ds.max_rows,
        )

    def key(self) -> str:
        return json.dumps([self.format_options.key(), repr(self.render), self.sequence_len,
                           self.overlength, self.max_rows])


def length_bucket(n: int) -> str:
    edge = 128
    while n > edge and edge < 65536:
        edge *= 2
    return f"<={edge}" if n <= edge else f">{edge}"


def _bucket_order(key: str) -> int:
    return int(key.lstrip("<=>")) + (1 if key.startswith(">") else 0)


# --------------------------------------------------------------------------- per-batch work


@dataclass
class BatchResult:
    examples: list[Example]
    skipped: list[tuple[int, str, str]]  # (row, reason, detail)
    truncated: int = 0
    empty_answer: int = 0


def _read_chat(data: dict[str, Any], fmt: str, settings: PipelineSettings) -> Chat:
    try:
        return row_to_chat(data, fmt, settings.format_options)
    except RecursionError:  # a value nested thousands deep (json.dumps / our walkers recurse)
        raise RowError(WRONG_CONTENT_TYPE, "nested too deeply") from None


def has_empty_answer(chat: Chat) -> bool:
    """An assistant message with reasoning, no tool call and no answer text."""
    return any(m.role == "assistant" and m.thinking and not m.content and not m.tool_calls
               for m in chat.messages)


def _truncate(ex: Example, limit: int) -> Example:
    return Example(ex.row, ex.input_ids[:limit], ex.labels[:limit], ex.message_index[:limit],
                   ex.role[:limit], ex.turn)


def process_rows(rows: Sequence[tuple[int, dict[str, Any] | BadRow]], fmt: str,
                 settings: PipelineSettings, renderer: HarmonyRenderer) -> BatchResult:
    """Validate, render and length-check one batch of (row number, row)."""
    result = BatchResult([], [])
    chats: list[tuple[int, Chat]] = []
    for row, data in rows:
        if isinstance(data, BadRow):
            result.skipped.append((row, NOT_JSON, data.error))
            continue
        try:
            chat = _read_chat(data, fmt, settings)
        except RowError as e:
            result.skipped.append((row, e.reason, e.detail))
            continue
        chats.append((row, chat))
    limit = settings.sequence_len
    for (row, chat), rendered in zip(chats, renderer.render_batch(chats), strict=False):
        if isinstance(rendered, RowError):
            result.skipped.append((row, rendered.reason, rendered.detail))
            continue
        result.empty_answer += has_empty_answer(chat)
        for ex in rendered:
            truncated = len(ex) > limit
            if truncated:
                if settings.overlength == "drop":
                    result.skipped.append((row, TOO_LONG, f"{len(ex)} tokens, longer than "
                                                          f"sequence_len {limit}"))
                    continue
                ex = _truncate(ex, limit)
                result.truncated += 1
            if ex.trained_tokens == 0:
                result.skipped.append((row, NO_TRAINED_TOKENS, "no trained tokens"
                                       + (" left after truncation" if truncated else "")))
                continue
            result.examples.append(ex)
    return result


_WORKER: dict[str, Any] = {}


def _worker_init(tokenizer: Any, fmt: str, settings: PipelineSettings) -> None:
    _WORKER["renderer"] = HarmonyRenderer(tokenizer, settings.render)
    _WORKER["fmt"] = fmt
    _WORKER["settings"] = settings


def _worker_batch(rows: list[tuple[int, dict[str, Any] | BadRow]]) -> BatchResult:
    return process_rows(rows, _WORKER["fmt"], _WORKER["settings"], _WORKER["renderer"])


def _batches(rows: Sequence[dict[str, Any] | BadRow], size: int) -> Iterable[list[tuple[int, Any]]]:
    """(row number, row) batches; row numbers are 1-based, like line numbers."""
    for start in range(0, len(rows), size):
        yield [(start + i, r) for i, r in enumerate(rows[start:start + size], 1)]


def _progress(total: int, description: str) -> Any:
    """A rich progress bar on a terminal; nothing otherwise (CI logs, the wizard's worker).

    Only from the main thread: the wizard prepares previews in a worker thread while Textual owns
    the terminal, and a bar drawn there would corrupt its screen.
    """
    if (total < 2 * BATCH_ROWS or not sys.stderr.isatty()
            or threading.current_thread() is not threading.main_thread()):
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), transient=True)
    progress.start()
    progress.add_task(description, total=total)
    return progress


def default_num_proc() -> int:
    """Processes for preprocessing when `dataset.num_proc` is unset.

    One process already keeps every core busy during tokenization (the Rust tokenizer is
    multithreaded); extra processes pay off only on machines with many cores, where the Python
    part (validation, rendering, masks) becomes the bottleneck. Measured on 2 cores: one process
    12.6 s, two processes 16.2 s for 12,000 conversations.
    """
    cores = os.cpu_count() or 1
    return 1 if cores < 8 else min(cores // 2, 8)


def _run_batches(rows: Sequence[dict[str, Any] | BadRow], fmt: str, settings: PipelineSettings,
                 tokenizer: Any, num_proc: int | None,
                 on_batch: Callable[[BatchResult], None]) -> None:
    procs = num_proc or default_num_proc()
    progress = _progress(len(rows), "preparing dataset")

    def advance(n: int) -> None:
        if progress is not None:
            progress.advance(progress.task_ids[0], n)

    try:
        if procs > 1 and len(rows) >= PARALLEL_MIN_ROWS:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
            # Workers split the rows; threads inside each would only contend (and the Rust
            # tokenizer warns after a fork when they are on).
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            with ProcessPoolExecutor(procs, mp_context=ctx, initializer=_worker_init,
                                     initargs=(tokenizer, fmt, settings)) as pool:
                for batch, result in zip(_batches(rows, BATCH_ROWS),
                                         pool.map(_worker_batch, _batches(rows, BATCH_ROWS)),
                                         strict=True):
                    on_batch(result)
                    advance(len(batch))
        else:
            renderer = HarmonyRenderer(tokenizer, settings.render)
            for batch in _batches(rows, BATCH_ROWS):
                on_batch(process_rows(batch, fmt, settings, renderer))
                advance(len(batch))
    finally:
        if progress is not None:
            progress.stop()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identifies the vocabulary and specials, cheaply (hashing tokenizer.json would cost ~1 s)."""
    cached = getattr(tokenizer, "_osstune_fingerprint", None)
    if cached:
        return cached
    h = hashlib.sha256()
    h.update(str(len(tokenizer)).encode())
    probe = "Hello 世界! <|end|> 12345 \n\t ünïcödé 🙂 functions.get_weather"
    h.update(json.dumps(tokenizer.backend_tokenizer.encode(probe).ids).encode())
    h.update(json.dumps(sorted(tokenizer.get_added_vocab().items())).encode())
    digest = h.hexdigest()[:32]
    with contextlib.suppress(AttributeError):
        tokenizer._osstune_fingerprint = digest
    return digest


def row_label(row: int, locations: Sequence[str] | None) -> str:
    """'row 3', or 'row 3 (part-2.jsonl line 5)' when the source says where the row came from."""
    where = locations[row - 1] if locations and row <= len(locations) else None
    same = where in (f"line {row}", f"item {row}")  # says nothing the number does not
    return f"row {row}" + (f" ({where})" if where and not same else "")


def prepare_rows(rows: Sequence[dict[str, Any] | BadRow], fmt: str, settings: PipelineSettings,
                 tokenizer: Any, num_proc: int | None = 1,
                 locations: Sequence[str] | None = None) -> tuple[list[Example], DatasetStats]:
    """Validate and render rows that are already in memory (the wizard's preview uses this).

    Row numbers (in `Example.row` and the skip samples) are 1-based; `locations` (one per row,
    e.g. "part-2.jsonl line 5") are added to the samples where they say more than the number.
    """
    stats = DatasetStats(rows_read=len(rows), format=fmt)
    examples: list[Example] = []
    skipped: Counter[str] = Counter()

    def take(result: BatchResult) -> None:
        if result.skipped and settings.invalid_rows == "fail":
            row, _reason, detail = result.skipped[0]
            raise DatasetError(f"{row_label(row, locations)}: {detail}")
        for row, reason, detail in result.skipped:
            skipped[reason] += 1
            if len(stats.skip_samples) < SKIP_SAMPLES:
                stats.skip_samples.append(f"{row_label(row, locations)}: {detail}")
        stats.examples_truncated += result.truncated
        stats.rows_empty_answer += result.empty_answer
        examples.extend(result.examples)

    _run_batches(rows, fmt, settings, tokenizer, num_proc, take)
    stats.rows_skipped = dict(skipped.most_common())
    _fill_totals(stats, examples)
    return examples, stats


def _fill_totals(stats: DatasetStats, examples: list[Example]) -> None:
    stats.examples = len(examples)
    stats.tokens_total = sum(len(e) for e in examples)
    stats.tokens_trained = sum(e.trained_tokens for e in examples)
    buckets = Counter(length_bucket(len(e)) for e in examples)
    stats.length_buckets = {k: buckets[k] for k in sorted(buckets, key=_bucket_order)}


def prepare_dataset(cfg: Any, tokenizer: Any, use_cache: bool = True) -> PreparedDataset:
    """Read, validate, render and mask the configured dataset; raises DatasetError."""
    settings = PipelineSettings.from_config(cfg)
    ds = cfg.dataset
    source = read_source(ds.path, ds.split)
    rows = source.rows[: settings.max_rows] if settings.max_rows else source.rows
    if not rows:
        raise DatasetError(f"{ds.path}: no rows (the dataset is empty)")
    if all(isinstance(r, BadRow) for r in rows):
        raise DatasetError(f"{ds.path}: no row is a JSON object; " + _first_problems(
            rows, source.locations))
    try:
        fmt = detect_format(source.columns, settings.format_options)
    except RowError as e:
        raise DatasetError(f"{ds.path}: {e.detail}") from None

    key = hashlib.sha256(json.dumps([
        source.fingerprint, tokenizer_fingerprint(tokenizer), settings.key(), fmt, len(rows),
    ]).encode()).hexdigest()[:32]
    cached = load_cached(key) if use_cache else None
    if cached is not None:
        examples, stats_dict = cached
        stats = DatasetStats(**stats_dict)
        if settings.invalid_rows == "fail" and stats.skip_samples:
            raise DatasetError(f"{ds.path}: {stats.skip_samples[0]}")
    else:
        try:
            examples, stats = prepare_rows(rows, fmt, settings, tokenizer, ds.num_proc,
                                           source.locations)
        except DatasetError as e:
            raise DatasetError(f"{ds.path}: {e}") from None
        stats.source = ds.path
        if use_cache:
            save_cached(key, examples, asdict(stats))

    if not examples:
        reasons = ", ".join(f"{k}: {v}" for k, v in stats.rows_skipped.items()) or "none"
        raise DatasetError(f"{ds.path}: no usable examples ({plural(stats.rows_read, 'row')} read; "
                           f"skipped by reason: {reasons})")
    if stats.tokens_trained == 0:
        raise DatasetError(f"{ds.path}: no trainable tokens")
    if ds.packing:
        # Only the row count is needed here: plan the bins, don't build the rows.
        bins = _pack_bins(examples, settings.sequence_len, cfg.training.seed)
        stats.packed_rows = len(bins)
        stats.packing_efficiency = round(
            stats.tokens_total / (len(bins) * settings.sequence_len), 6) if bins else None
    return PreparedDataset(examples, stats)


def _first_problems(rows: Sequence[dict[str, Any] | BadRow], locations: Sequence[str] | None,
                    count: int = 3) -> str:
    """'row 1: not valid JSON: ...; row 2: ...' for the first bad rows (all are BadRow here)."""
    parts = [f"{row_label(i, locations)}: {r.error}"
             for i, r in enumerate(rows[:count], 1) if isinstance(r, BadRow)]
    more = len(rows) - count
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
