"""Several datasets in one run, and the held-out validation split.

`prepare_training_data(cfg, tokenizer)` prepares every source of `cfg.dataset_sources()` with
its own format and mapping (`prepare_dataset`), splits validation conversations off
(`dataset.val_size`) or prepares `dataset.val_path`, then mixes the training examples by weight:
a weight of 2.0 repeats each example twice, 0.5 keeps a seeded half. The statistics add up the
sources and list each one in `stats.sources`. No torch import here.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from osstune.engine.data.dataset import (
    DatasetError,
    DatasetStats,
    Example,
    PackedRow,
    PreparedDataset,
    _fill_totals,
    _pack_bins,
    pack_examples,
    prepare_dataset,
)


@dataclass
class TrainingData:
    train: list[Example]
    validation: list[Example]
    stats: DatasetStats


def _validation_count(val_size: float, groups: int, source: str) -> int:
    n = round(val_size * groups) if val_size < 1 else int(val_size)
    n = max(n, 1)
    if n >= groups:
        raise DatasetError(f"{source}: dataset.val_size {val_size:g} asks for {n} of its "
                           f"{groups} usable conversations; leave some to train on")
    return n


def split_validation(parts: list[list[Example]], val_size: float, seed: int, source: str
                     ) -> tuple[list[list[Example]], list[Example]]:
    """Hold out whole conversations (all examples of a row go to the same side), seeded."""
    groups = sorted({(i, ex.row) for i, part in enumerate(parts) for ex in part})
    held = set(random.Random(seed).sample(groups, _validation_count(val_size, len(groups),
                                                                    source)))
    train = [[ex for ex in part if (i, ex.row) not in held] for i, part in enumerate(parts)]
    val = [ex for i, part in enumerate(parts) for ex in part if (i, ex.row) in held]
    return train, val


def weighted(examples: list[Example], weight: float, rng: random.Random) -> list[Example]:
    whole, frac = int(weight), weight - int(weight)
    extra = rng.sample(examples, round(frac * len(examples))) if frac else []
    return examples * whole + extra


def _source_stats(prepared: PreparedDataset, weight: float, train: list[Example],
                  used: list[Example]) -> dict[str, Any]:
    s = prepared.stats
    return {"source": s.source, "format": s.format, "weight": weight, "rows_read": s.rows_read,
            "rows_skipped": dict(s.rows_skipped), "examples": len(train),
            "examples_used": len(used), "tokens_trained": sum(e.trained_tokens for e in used)}


def _mix_stats(prepared: list[PreparedDataset], train: list[Example]) -> DatasetStats:
    if len(prepared) == 1:
        stats = replace(prepared[0].stats)
    else:
        skipped: Counter[str] = Counter()
        for p in prepared:
            skipped.update(p.stats.rows_skipped)
        stats = DatasetStats(
            rows_read=sum(p.stats.rows_read for p in prepared),
            rows_skipped=dict(skipped.most_common()),
            examples_truncated=sum(p.stats.examples_truncated for p in prepared),
            rows_empty_answer=sum(p.stats.rows_empty_answer for p in prepared),
            skip_samples=[f"{p.stats.source}: {line}" for p in prepared
                          for line in p.stats.skip_samples][:20],
            format="mixed", source=" + ".join(p.stats.source for p in prepared))
    _fill_totals(stats, train)
    return stats


def prepare_validation(cfg: Any, tokenizer: Any, use_cache: bool) -> list[Example]:
    ds = cfg.dataset.model_copy(update={"path": cfg.dataset.val_path, "max_rows": None})
    return prepare_dataset(cfg.model_copy(update={"dataset": ds}), tokenizer, use_cache).examples


def prepare_training_data(cfg: Any, tokenizer: Any, use_cache: bool = True) -> TrainingData:
    """Every source prepared, validation split off, the training examples mixed by weight."""
    sources = cfg.dataset_sources()
    prepared = [prepare_dataset(cfg.model_copy(update={"dataset": ds}), tokenizer, use_cache)
                for ds, _weight in sources]
    parts = [p.examples for p in prepared]
    validation: list[Example] = []
    if cfg.dataset.val_size is not None:
        parts, validation = split_validation(parts, cfg.dataset.val_size, cfg.training.seed,
                                             " + ".join(ds.path for ds, _ in sources))
    elif cfg.dataset.val_path:
        validation = prepare_validation(cfg, tokenizer, use_cache)

    rng = random.Random(cfg.training.seed)
    used = [weighted(part, weight, rng) for part, (_ds, weight) in zip(parts, sources,
                                                                        strict=True)]
    train = [ex for part in used for ex in part]
    if len(sources) > 1:
        rng.shuffle(train)  # interleave the sources (packing reorders anyway)
    stats = _mix_stats(prepared, train)
    if len(sources) > 1:
        stats.sources = [_source_stats(p, w, part, u) for p, (_ds, w), part, u
                         in zip(prepared, sources, parts, used, strict=True)]
    if validation:
        stats.validation = {
            "source": cfg.dataset.val_path or f"val_size {cfg.dataset.val_size:g}",
            "examples": len(validation),
            "tokens_trained": sum(e.trained_tokens for e in validation)}
    if cfg.dataset.packing:
        pack_stats(stats, train, cfg.training.sequence_len, cfg.training.seed)
    return TrainingData(train, validation, stats)


def pack_stats(stats: DatasetStats, train: list[Example], pack_len: int, seed: int) -> None:
    """Set the packed row count and packing efficiency of `train` in rows of `pack_len`."""
    bins = _pack_bins(train, pack_len, seed)
    stats.packed_rows = len(bins)
    stats.packing_efficiency = round(stats.tokens_total / (len(bins) * pack_len), 6) \
        if bins else None


def to_rows(examples: list[Example], sequence_len: int, seed: int, packing: bool
            ) -> list[PackedRow]:
    """Packed rows of `sequence_len`, or one row per example when packing is off."""
    if packing:
        return pack_examples(examples, sequence_len, seed)
    return [PackedRow(list(e.input_ids), list(e.labels), list(range(len(e.input_ids))),
                      [len(e.input_ids)]) for e in examples]
