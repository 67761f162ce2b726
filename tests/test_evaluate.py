"""Evaluator: when it runs, how rows are spread over ranks, and the token-mean it reports."""

from __future__ import annotations

import torch

from osstune.engine.data.dataset import PackedRow
from osstune.engine.trainer.evaluate import Evaluator
from osstune.engine.trainer.objective import IGNORE_INDEX
from osstune.engine.trainer.train import collate


def _row(n_trained: int, length: int = 8, token: int = 5) -> PackedRow:
    labels = [IGNORE_INDEX] * (length - n_trained) + [token] * n_trained
    return PackedRow([token] * length, labels, list(range(length)), [length])


def _evaluator(rows, eval_steps=None, mb=1, rank=0, world=1):
    return Evaluator(rows, eval_steps, mb, rank, world, torch.device("cpu"), collate)


def test_due_every_eval_steps_and_at_the_end():
    ev = _evaluator([_row(2)], eval_steps=2)
    assert [s for s in range(1, 6) if ev.due(s, 5)] == [2, 4, 5]
    assert [s for s in range(1, 6) if _evaluator([_row(2)]).due(s, 5)] == [5]
    assert not _evaluator([], eval_steps=1).due(5, 5)  # no validation split: never


def test_ranks_share_the_rows_and_pad_with_masked_rows():
    rows = [_row(1, token=t) for t in (1, 2, 3)]
    seen = []
    for rank in range(2):
        batches = _evaluator(rows, mb=2, rank=rank, world=2)._batches()
        assert len(batches) == 1  # every rank runs the same number of forwards
        seen.append(batches[0])
    assert [r.input_ids[0] for r in seen[0]] == [1, 2]
    assert seen[1][0] is rows[2]
    assert all(label == IGNORE_INDEX for label in seen[1][1].labels)  # padding trains nothing


class SumObjective(torch.nn.Module):
    """Loss of a token = its id: the eval loss must be the mean over trained tokens."""

    def forward(self, input_ids, position_ids, targets):
        mask = targets != IGNORE_INDEX
        return targets[mask].float().sum(), int(mask.sum()), None


def test_eval_loss_is_the_token_mean_and_restores_train_mode():
    objective = SumObjective().train()
    rows = [_row(1, token=1), _row(3, token=5)]
    result = _evaluator(rows, mb=1).evaluate(objective, step=7)
    assert result["step"] == 7 and result["rows"] == 2
    assert result["trained_tokens"] == 4
    assert result["loss"] == (1 * 1 + 3 * 5) / 4  # per token, not the mean of row means (3.0)
    assert objective.training
