"""A tiny trained model + optimizer and a trainer state: what the checkpoint fault tests save,
kill and load (imported by the tests and by the scripts they run in a child process)."""

from __future__ import annotations

import torch

from osstune.engine.trainer import checkpoint as ckpt


def trained(seed: int = 0) -> tuple[torch.nn.Linear, torch.optim.AdamW]:
    """A 4->3 linear layer after one AdamW step: weights and optimizer state both non-trivial."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    return model, opt


def trainer_state(step: int) -> ckpt.TrainerState:
    return ckpt.TrainerState(step=step, total_steps=9, world_size=1, method="full",
                             elapsed_s=1.0, scheduler={})
