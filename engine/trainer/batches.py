"""The data stage: packed rows in training order, micro-batches, the number of steps.

Rank 0 tokenizes and packs (engine/data), then broadcasts the rows; every rank then reads its own
micro-batches by position, so the data state a checkpoint needs is the step number alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from osstune.engine.data.dataset import PAD_ID, DatasetError, PackedRow
from osstune.engine.data.dataset_mix import pack_stats, prepare_training_data, to_rows
from osstune.engine.data.tokenizer import TokenizerError, load_tokenizer
from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.estimate import DatasetFacts, pack_len_for, sizing_card_gib
from osstune.engine.plan.packlen import PackLen
from osstune.engine.trainer.objective import IGNORE_INDEX, shift_labels
from osstune.engine.trainer.runtime import Runtime


class RowStream:
    """Rows in training order across epochs: position p -> row, independent of the world size.

    Epoch 0 keeps the packer's (seeded) order; later epochs reshuffle with seed + epoch. The
    position of the next row is the only data state a checkpoint needs: step x rows per step.
    """

    def __init__(self, rows: list[PackedRow], seed: int, shuffle: bool) -> None:
        if not rows:
            raise DatasetError("no training rows after packing")
        self.rows, self.seed, self.shuffle = rows, seed, shuffle
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.rows)))
            if epoch and self.shuffle:
                random.Random(self.seed + epoch).shuffle(order)
            self._orders[epoch] = order
        return self._orders[epoch]

    def row(self, position: int) -> PackedRow:
        epoch, index = divmod(position, len(self.rows))
        return self.rows[self._order(epoch)[index]]


@dataclass
class MicroBatch:
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    real_tokens: int  # not padding
    trained_tokens: int


def _real_length(row: PackedRow) -> int:
    n = len(row.input_ids)
    while n and row.input_ids[n - 1] == PAD_ID and row.labels[n - 1] == IGNORE_INDEX:
        n -= 1
    return n


def collate(rows: list[PackedRow]) -> MicroBatch:
    """Pad to the longest row; padding is its own segment (positions restart), never trained."""
    width = max(len(r.input_ids) for r in rows)
    ids, labels, pos = [], [], []
    for r in rows:
        pad = width - len(r.input_ids)
        ids.append(r.input_ids + [PAD_ID] * pad)
        labels.append(r.labels + [IGNORE_INDEX] * pad)
        pos.append(r.position_ids + list(range(pad)))
    input_ids = torch.tensor(ids, dtype=torch.long)
    position_ids = torch.tensor(pos, dtype=torch.long)
    targets = shift_labels(torch.tensor(labels, dtype=torch.long), position_ids)
    return MicroBatch(input_ids, position_ids, targets,
                      real_tokens=sum(_real_length(r) for r in rows),
                      trained_tokens=int((targets != IGNORE_INDEX).sum()))


def micro_batch(stream: RowStream, step: int, micro: int, rt: Runtime, cfg: RunConfig
                ) -> MicroBatch:
    t = cfg.training
    first = ((step * t.gradient_accumulation_steps + micro) * rt.world_size + rt.rank) * \
        t.micro_batch_size
    return collate([stream.row(first + j) for j in range(t.micro_batch_size)])


def step_batches(stream: RowStream, step: int, rt: Runtime, cfg: RunConfig) -> list[MicroBatch]:
    """This rank's micro-batches of optimizer step `step` (0-based)."""
    return [micro_batch(stream, step, m, rt, cfg)
            for m in range(cfg.training.gradient_accumulation_steps)]


def card_memory_gib(rt: Runtime) -> tuple[float | None, float | None, str | None]:
    """(total GiB, free GiB, name) of this process's GPU before the model loads; Nones on the
    CPU."""
    if rt.device.type != "cuda":
        return None, None, None
    free, total = torch.cuda.mem_get_info(rt.device)
    return total / 1024**3, free / 1024**3, torch.cuda.get_device_name(rt.device)


def resolve_pack_len(cfg: RunConfig, rt: Runtime, stats: Any, resumed: int | None) -> PackLen:
    """The row length to pack at: a resumed run keeps its own (the rows, hence the data order,
    depend on it); otherwise the estimator's rule for this card (its total less the reserve, or
    its free memory when less: the rule `osstune plan` applies to the profile's cards) and this
    data."""
    if resumed is not None and cfg.training.pack_len == "auto" and \
            resumed >= cfg.training.sequence_len:
        return PackLen(resumed, "resumed", "auto: the rows of the run being resumed")
    total, free, name = card_memory_gib(rt)
    facts = DatasetFacts(tokens_total=stats.tokens_total, examples=stats.examples)
    return pack_len_for(cfg, sizing_card_gib(total, free), name, facts)


def training_rows(cfg: RunConfig, rt: Runtime, resumed_pack_len: int | None = None
                  ) -> tuple[list[PackedRow], list[PackedRow], dict, Any]:
    """(rows, validation rows, dataset stats, tokenizer or None): rank 0 tokenizes, chooses the
    row length (stats["pack_len"]) and packs, then broadcasts.

    The other ranks never load the tokenizer or read the dataset (8 ranks each loading a
    200k-token vocabulary and re-rendering the data cost more than the broadcast).
    """
    payload: list[Any] = [None, None, None]
    tokenizer = None
    failure: Exception | None = None
    if rt.is_main:
        try:
            tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.id)
            data = prepare_training_data(cfg, tokenizer)
            t, packing = cfg.training, cfg.dataset.packing
            chosen = resolve_pack_len(cfg, rt, data.stats, resumed_pack_len)
            if packing and chosen.length != t.sequence_len:
                pack_stats(data.stats, data.train, chosen.length, t.seed)
            rows = to_rows(data.train, chosen.length, t.seed, packing)
            val_rows = to_rows(data.validation, chosen.length, t.seed, packing)
            stats = data.stats.as_dict()
            stats["rows"] = len(rows)
            stats["pack_len"] = chosen.as_dict()
            payload = [rows, val_rows, stats]
        except (DatasetError, TokenizerError) as e:
            failure = e  # every rank raises it, so no rank waits for the others forever
    if rt.world_size > 1:
        box: list[Any] = [failure, payload]
        dist.broadcast_object_list(box, src=0)
        failure, payload = box
    if failure is not None:
        raise failure
    return payload[0], payload[1], payload[2], tokenizer


def total_steps_for(cfg: RunConfig, n_rows: int, world_size: int) -> int:
    t = cfg.training
    if t.max_steps:
        return t.max_steps
    per_step = world_size * t.micro_batch_size * t.gradient_accumulation_steps
    return max(1, math.ceil(t.num_epochs * n_rows / per_step))
