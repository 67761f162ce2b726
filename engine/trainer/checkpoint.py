"""Training checkpoints: sharded (torch.distributed.checkpoint), resumable, written then renamed.

Layout: OUTPUT/checkpoints/step-000120/ holds the DCP shards of {"model", "optim"} (every rank
writes its own shard), `trainer_state.json` (step, scheduler, elapsed time), `rng/rank-R.pt` and,
written last, `COMPLETE`. Everything goes into `.tmp-step-000120` first and is renamed once all
ranks finished, so a kill during a save leaves the previous checkpoint untouched. LoRA runs save
only the trainable (adapter) parameters.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

# A single-process run saves without a process group on purpose; DCP warns about it every time.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or")

CHECKPOINTS_DIR = "checkpoints"
COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message names the folder."""


@dataclass
class TrainerState:
    step: int
    total_steps: int
    world_size: int
    method: str
    elapsed_s: float
    scheduler: dict[str, Any]
    format: int = FORMAT_VERSION


def checkpoints_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (half-written `.tmp-*` folders are never listed)."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")
             and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _is_dist() else 0


def _barrier() -> None:
    if _is_dist():
        dist.barrier()


def _options(lora: bool) -> StateDictOptions:
    # LoRA: the frozen base weights come from the model id, not from the checkpoint.
    return StateDictOptions(ignore_frozen_params=lora)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(output_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    trainer: TrainerState, keep_last: int, lora: bool) -> Path:
    """Collective: every rank calls it. Returns the final folder."""
    root = checkpoints_root(output_dir)
    final = root / step_dir_name(trainer.step)
    tmp = root / f".tmp-{final.name}"
    if _rank() == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "rng").mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(lora))
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / "rng" / f"rank-{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        (tmp / STATE_FILE).write_text(json.dumps(trainer.__dict__, indent=2), encoding="utf-8")
        (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
        if final.exists():  # re-saving the same step after a resume
            shutil.rmtree(final)
        tmp.rename(final)
        for old in complete_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _check_shards(folder: Path) -> None:
    """The index reads and every byte range it names exists: catches truncated shards early."""
    try:
        metadata = dcp.FileSystemReader(str(folder)).read_metadata()
    except Exception as e:
        raise CheckpointError(f"checkpoint {folder}: corrupt .metadata ({_reason(e)})") from None
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = info.offset + info.length
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, end in needed.items():
        shard = folder / name
        size = shard.stat().st_size if shard.is_file() else -1
        if size < end:
            what = "missing" if size < 0 else f"truncated ({size} of {end} bytes)"
            raise CheckpointError(f"checkpoint {folder}: shard {name} is {what}")


def read_trainer_state(folder: Path) -> TrainerState:
    """Validate the folder's bookkeeping before any weights are built; raises CheckpointError."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder}: no such folder")
    if not (folder / COMPLETE).is_file():
        raise CheckpointError(f"checkpoint {folder}: incomplete (no {COMPLETE} marker); "
                              "it was interrupted while saving")
    if not (folder / ".metadata").is_file():
        raise CheckpointError(f"checkpoint {folder}: corrupt (missing .metadata)")
    try:
        data = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        state = TrainerState(**data)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {folder}: corrupt {STATE_FILE}: {e}") from None
    _check_shards(folder)
    if state.format != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {folder}: format {state.format}, expected {FORMAT_VERSION}")
    return state


def _reason(e: BaseException) -> str:
    """One line from a DCP error (which wraps each rank's failure and its traceback)."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        first = next(iter(failures.values()))
        # Each rank's failure is (exception, traceback frames).
        e = first[0] if isinstance(first, tuple) and first else first
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    lora: bool) -> None:
    """Collective: restore model and optimizer shards (any world size) and this rank's RNG."""
    options = _options(lora)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    state = {"model": model_sd, "optim": optim_sd}
    try:
        dcp.load(state, checkpoint_id=str(folder))
    except (Exception, CheckpointException) as e:
        raise CheckpointError(f"checkpoint {folder}: corrupt or incompatible: {_reason(e)}"
                              ) from None
    # LoRA checkpoints lack the frozen base weights by design: load non-strictly, then make sure
    # no trainable parameter was left out.
    load_options = StateDictOptions(ignore_frozen_params=lora, strict=not lora)
    result = set_state_dict(model, optimizer, model_state_dict=state["model"],
                            optim_state_dict=state["optim"], options=load_options)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = [k for k in getattr(result, "missing_keys", []) if k in trainable]
    if missing:
        raise CheckpointError(f"checkpoint {folder}: lacks trained weights, e.g. {missing[0]}")
    rng_file = folder / "rng" / f"rank-{_rank()}.pt"
    if rng_file.is_file():
        try:
            set_rng_state(torch.load(rng_file, weights_only=True))
        except Exception as e:
            raise CheckpointError(f"checkpoint {rng_file}: corrupt: {e}") from None


def load_model_weights(folder: Path, model: nn.Module) -> None:
    """Only the model part, into an unsharded model (merge of a sharded checkpoint)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    sd = get_model_state_dict(model)
    try:
        dcp.load({"model": sd}, checkpoint_id=str(folder))
    except (Exception, CheckpointException) as e:
        raise CheckpointError(f"checkpoint {folder}: corrupt or incompatible: {_reason(e)}"
                              ) from None
    set_model_state_dict(model, sd)
