"""Packing examples into fixed-length rows (best-fit decreasing, deterministic per seed)."""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass

from osstune.engine.data.harmony import IGNORE_INDEX, Example

PAD_ID = 199999  # <|endoftext|>


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    example_lengths: list[int]  # lengths of the packed examples, then the padding (if any)



def pack_examples(examples: Sequence[Example], sequence_len: int, seed: int,
                  pad_id: int = PAD_ID) -> list[PackedRow]:
    """Best-fit-decreasing packing into rows of exactly `sequence_len` tokens.

    Deterministic for a given seed: examples are shuffled, sorted by length (stable), placed into
    the fullest row that still fits, and the rows are shuffled. Each row is padded with `pad_id`
    (labels -100); position ids restart at 0 for every example and for the padding.
    """
    rows = []
    for members in _pack_bins(examples, sequence_len, seed):
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        lengths: list[int] = []
        for i in members:
            ex = examples[i]
            input_ids += ex.input_ids
            labels += ex.labels
            positions += range(len(ex))
            lengths.append(len(ex))
        pad = sequence_len - len(input_ids)
        if pad:
            input_ids += [pad_id] * pad
            labels += [IGNORE_INDEX] * pad
            positions += range(pad)
            lengths.append(pad)
        rows.append(PackedRow(input_ids, labels, positions, lengths))
    return rows


def _pack_bins(examples: Sequence[Example], sequence_len: int, seed: int) -> list[list[int]]:
    """The packing plan of `pack_examples`: example indices per row, in row order."""
    if sequence_len < 1:
        raise ValueError("sequence_len must be positive")
    order = list(range(len(examples)))
    rng = random.Random(seed)
    rng.shuffle(order)
    order.sort(key=lambda i: -len(examples[i]))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin id), sorted
    for i in order:
        n = len(examples[i])
        if n > sequence_len:
            raise ValueError(f"example from row {examples[i].row} has {n} tokens, "
                             f"longer than sequence_len {sequence_len}")
        if n == 0:
            continue
        at = bisect_left(free, (n, -1))
        if at < len(free):
            space, b = free.pop(at)
        else:
            space, b = sequence_len, len(bins)
            bins.append([])
        bins[b].append(i)
        if space - n > 0:
            insort(free, (space - n, b))
    rng.shuffle(bins)
    return bins
