"""The step stage: one optimizer step over this rank's micro-batches, and what it measured."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from osstune.engine.trainer.batches import MicroBatch
from osstune.engine.trainer.optim import clip_gradients
from osstune.engine.trainer.runtime import Runtime
from osstune.engine.trainer.setup import Optimization


@dataclass
class StepResult:
    loss: float  # mean over the step's trained tokens on all ranks
    trained_tokens: int  # all ranks
    real_tokens: int  # all ranks, padding excluded
    grad_norm: torch.Tensor  # read at log time only (one CPU-GPU sync fewer per step)
    lr: float  # the rate this step used
    stop_requested: bool  # by a signal on any rank


def forward_backward(objective: torch.nn.Module, batches: list[MicroBatch], rt: Runtime,
                     aux_coef: float = 0.0) -> tuple[torch.Tensor, int, int]:
    """Accumulate the gradients of one optimizer step; returns (local loss sum, trained tokens
    of the step over all ranks, real tokens of the step over all ranks).

    One normaliser for the whole step: the trained tokens of all micro-batches on all ranks, so
    the gradient equals that of one large batch (not the mean of per-micro-batch means).
    """
    counts = torch.tensor([sum(b.trained_tokens for b in batches),
                           sum(b.real_tokens for b in batches)], dtype=torch.float64)
    if rt.world_size > 1:
        counts = counts.to(rt.device)
        dist.all_reduce(counts)
    step_trained, step_tokens = (int(x) for x in counts.tolist())
    # FSDP averages gradients over ranks; multiplying by the world size turns that average into
    # the sum that the global token count expects.
    scale = rt.world_size / max(step_trained, 1)
    loss_sum = torch.zeros((), dtype=torch.float32, device=rt.device)
    # FSDP reduce-scatters after every micro-batch (no no-sync accumulation): skipping it would
    # keep unsharded gradients of the whole model on every GPU until the last micro-batch.
    for b in batches:
        part, _, aux = objective(b.input_ids.to(rt.device), b.position_ids.to(rt.device),
                                 b.targets.to(rt.device))
        loss = part * scale
        if aux is not None:
            loss = loss + aux_coef * aux / len(batches)
        loss.backward()
        loss_sum += part.detach()
    return loss_sum, step_trained, step_tokens


def train_step(objective: torch.nn.Module, opt: Optimization, batches: list[MicroBatch],
               rt: Runtime, max_grad_norm: float | None, aux_coef: float,
               stop_requested: bool) -> StepResult:
    loss_sum, trained, tokens = forward_backward(objective, batches, rt, aux_coef)
    grad_norm = clip_gradients(opt.params, max_grad_norm or float("inf"), opt.optimizer)
    lr = opt.scheduler.get_last_lr()[0]
    opt.optimizer.step()
    opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)
    # Loss and the stop flag travel together: one collective, one CPU-GPU sync per step.
    shared = torch.stack([loss_sum.to(torch.float64),
                          torch.tensor(float(stop_requested), dtype=torch.float64,
                                       device=rt.device)])
    if rt.world_size > 1:
        dist.all_reduce(shared)
    total_loss, stop_votes = shared.tolist()
    return StepResult(loss=total_loss / trained if trained else 0.0, trained_tokens=trained,
                      real_tokens=tokens, grad_norm=grad_norm, lr=lr,
                      stop_requested=stop_votes > 0)
