"""Eval loss on the held-out validation rows: every `training.eval_steps` and at the end.

The loop calls `Evaluator.due(step, total_steps)` after each optimizer step and, when due,
`evaluate(objective, step)`; the result is the `eval` event (engine/session/events.py). Under
FSDP every rank runs the same number of forwards (ranks past the end get a fully masked row), and
the loss is summed over the trained tokens of every rank, then divided once: the same token-mean
as the training loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from osstune.engine.data.dataset import PackedRow
from osstune.engine.trainer.objective import IGNORE_INDEX


def _masked(row: PackedRow) -> PackedRow:
    """A row that keeps every rank's forward count equal and adds nothing to the loss."""
    return PackedRow(row.input_ids, [IGNORE_INDEX] * len(row.labels), row.position_ids,
                     row.example_lengths)


class Evaluator:
    def __init__(self, rows: list[PackedRow], eval_steps: int | None, micro_batch_size: int,
                 rank: int, world_size: int, device: torch.device,
                 collate: Callable[[list[PackedRow]], Any]) -> None:
        self.rows, self.eval_steps = rows, eval_steps
        self.micro_batch_size, self.rank, self.world_size = micro_batch_size, rank, world_size
        self.device, self.collate = device, collate

    @property
    def enabled(self) -> bool:
        return bool(self.rows)

    def due(self, step: int, total_steps: int) -> bool:
        if not self.enabled:
            return False
        return step == total_steps or bool(self.eval_steps and step % self.eval_steps == 0)

    def _batches(self) -> list[list[PackedRow]]:
        per_round = self.micro_batch_size * self.world_size
        rounds = math.ceil(len(self.rows) / per_round)
        out = []
        for r in range(rounds):
            first = (r * self.world_size + self.rank) * self.micro_batch_size
            picked = range(first, first + self.micro_batch_size)
            out.append([self.rows[i] if i < len(self.rows) else _masked(self.rows[0])
                        for i in picked])
        return out

    @torch.no_grad()
    def evaluate(self, objective: torch.nn.Module, step: int) -> dict[str, Any]:
        """Collective: every rank calls it at the same step. Returns the eval event's fields."""
        started = time.perf_counter()
        was_training = objective.training
        objective.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        trained = 0
        try:
            for rows in self._batches():
                b = self.collate(rows)
                part, _, _ = objective(b.input_ids.to(self.device), b.position_ids.to(self.device),
                                       b.targets.to(self.device))
                loss_sum += part.detach().to(torch.float64)
                trained += b.trained_tokens
        finally:
            objective.train(was_training)
        totals = torch.stack([loss_sum, torch.tensor(float(trained), dtype=torch.float64,
                                                     device=self.device)])
        if self.world_size > 1:
            dist.all_reduce(totals)
        total_loss, total_trained = totals.tolist()
        loss = total_loss / total_trained if total_trained else 0.0
        return {"step": step, "loss": round(loss, 6), "trained_tokens": int(total_trained),
                "rows": len(self.rows), "duration_s": round(time.perf_counter() - started, 3)}
