"""The save stage: a checkpoint manager that owns the save policy (when, where, how many kept),
the free-space check before each save, the resume point, and what a failed save tells the user.

The protocol itself (temp folder, rename, COMPLETE marker) lives in engine/trainer/checkpoint.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.preflight import save_space
from osstune.engine.trainer import checkpoint as ckpt
from osstune.engine.trainer.runtime import Runtime, log
from osstune.engine.trainer.setup import Optimization

# DCP adds an index, RNG files and per-tensor headers to the tensor bytes.
SAVE_OVERHEAD = 1.02
SAVE_SLACK_BYTES = 4 << 20


class SaveError(RuntimeError):
    """A checkpoint that could not be written; `kind` is the error event's kind."""

    def __init__(self, kind: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.kind, self.hint = kind, hint


@dataclass
class Resumed:
    folder: Path
    state: ckpt.TrainerState


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, lora: bool) -> int:
    """Bytes this rank writes into a checkpoint (its shards of the weights and optimizer)."""
    total = sum(_local(p).numel() * p.element_size() for p in model.parameters()
                if p.requires_grad or not lora)
    for state in optimizer.state.values():
        total += sum(_local(v).numel() * v.element_size() for v in state.values()
                     if torch.is_tensor(v))
    return total


class CheckpointManager:
    def __init__(self, cfg: RunConfig, output: Path, rt: Runtime, *, enabled: bool,
                 resume_command: str) -> None:
        self.cfg, self.output, self.rt = cfg, output, rt
        self.enabled, self.resume_command = enabled, resume_command
        self.pack_len: int | None = None  # the packed row length (a resume packs the same rows)
        self.lora = cfg.method == "lora"
        self.last_saved: Path | None = None

    # ------------------------------------------------------------------------- resume

    def resume_point(self, arg: str | None) -> Resumed | None:
        """The checkpoint `--resume [PATH]` names, validated before anything heavy is built."""
        if arg is None:
            return None
        if arg == "latest":
            ckpt.recover_interrupted_publish(self.output)  # a step a kill left mid-publish
            folder = ckpt.latest_checkpoint(self.output)
            if folder is None:
                raise ckpt.CheckpointError(
                    f"--resume: no finished checkpoint in {ckpt.checkpoints_root(self.output)}")
        else:
            folder = Path(arg)
        state = ckpt.read_trainer_state(folder)
        if state.method != self.cfg.method:
            raise ckpt.CheckpointError(f"checkpoint {folder}: saved by a {state.method} run, "
                                       f"this config is {self.cfg.method}")
        return Resumed(folder, state)

    def load(self, resumed: Resumed, objective: torch.nn.Module, opt: Optimization) -> None:
        ckpt.load_checkpoint(resumed.folder, objective, opt.optimizer, self.lora)
        opt.scheduler.load_state_dict(resumed.state.scheduler)
        log(f"resumed from {resumed.folder} at step {resumed.state.step}")

    # ------------------------------------------------------------------------- save

    def due(self, step: int, total_steps: int, stopping: bool) -> bool:
        every = self.cfg.output.save_steps
        return self.enabled and (stopping or step == total_steps
                                 or bool(every and step % every == 0))

    def _needed_and_free(self, objective: torch.nn.Module, opt: Optimization) -> tuple[int, int]:
        local = torch.tensor([state_bytes(objective, opt.optimizer, self.lora)],
                             dtype=torch.int64)
        if self.rt.world_size > 1:
            dist.all_reduce(local)
        needed = int(int(local.item()) * SAVE_OVERHEAD) + SAVE_SLACK_BYTES
        root = ckpt.checkpoints_root(self.output)
        root.mkdir(parents=True, exist_ok=True)
        free, _ = save_space(root, needed)
        return needed, free

    def _disk_full(self, step: int, needed: int, free: int, detail: str) -> SaveError:
        root = ckpt.checkpoints_root(self.output)
        return SaveError(
            "disk_full", f"checkpoint {root / ckpt.step_dir_name(step)}: {detail}",
            f"needs ~{needed} bytes, {free} free at {root}: free {max(needed - free, 0)} bytes "
            f"or more (or lower output.keep_last), then continue with `{self.resume_command}`")

    def save(self, step: int, total_steps: int, elapsed_s: float, objective: torch.nn.Module,
             opt: Optimization) -> Path:
        """Collective. Refuses (SaveError, on every rank) when the disk cannot hold it."""
        needed, free = self._needed_and_free(objective, opt)
        if not ckpt.all_ok(free < 0 or free >= needed):
            raise self._disk_full(step, needed, free, "not enough free space to save")
        state = ckpt.TrainerState(step=step, total_steps=total_steps,
                                  world_size=self.rt.world_size, method=self.cfg.method,
                                  elapsed_s=elapsed_s, scheduler=opt.scheduler.state_dict(),
                                  pack_len=self.pack_len)
        try:
            self.last_saved = ckpt.save_checkpoint(self.output, objective, opt.optimizer, state,
                                                   self.cfg.output.keep_last, self.lora)
        except ckpt.CheckpointSaveError as e:
            if e.disk_full:
                free, _ = save_space(ckpt.checkpoints_root(self.output), needed)
                raise self._disk_full(step, needed, free, str(e).split(": ", 1)[1]) from None
            raise SaveError("checkpoint", str(e), "check that the output folder is writable, "
                            f"then continue with `{self.resume_command}`") from None
        return self.last_saved
