"""The data pipeline: rows -> validated chats -> harmony examples with masks -> packed rows.

`prepare_dataset(cfg, tokenizer)` reads the configured dataset, validates every row (policy
`skip` counts and reports bad rows, `fail` stops at the first one), renders and masks, applies the
over-length policy and returns the examples with statistics. Work is batched (one tokenizer call
per batch) and spread over processes for big datasets (dataset_batches.py), and cached on disk by
dataset fingerprint + tokenizer + settings. `pack_examples` (packing.py) packs examples into
fixed-length rows whose position ids restart at 0 per example. No torch import here: the wizard
previews data in a worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from osstune.engine.data.chat import RowError
from osstune.engine.data.dataset_batches import BatchResult, PipelineSettings, run_batches
from osstune.engine.data.dataset_cache import load_cached, save_cached
from osstune.engine.data.dataset_formats import detect_format
from osstune.engine.data.dataset_sources import (
    DATASET_BUILTIN_SAMPLE,
    BadRow,
    DatasetError,
    read_source,
)
from osstune.engine.data.harmony import Example
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
    "PipelineSettings",
    "PreparedDataset",
    "TokenView",
    "pack_examples",
    "prepare_dataset",
    "prepare_rows",
    "token_view",
]

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


def length_bucket(n: int) -> str:
    edge = 128
    while n > edge and edge < 65536:
        edge *= 2
    return f"<={edge}" if n <= edge else f">{edge}"


def _bucket_order(key: str) -> int:
    return int(key.lstrip("<=>")) + (1 if key.startswith(">") else 0)


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

    run_batches(rows, fmt, settings, tokenizer, num_proc, take)
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
