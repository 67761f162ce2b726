"""Training checkpoints: sharded (torch.distributed.checkpoint), resumable, written then renamed.

Layout: OUTPUT/checkpoints/step-000120/ holds the DCP shards of {"model", "optim"} (every rank
writes its own shard), `trainer_state.json` (step, scheduler, elapsed time), `rng/rank-R.pt` and,
written last, `COMPLETE`. Everything goes into `.tmp-step-000120` first and is renamed once all
ranks finished, so a kill during a save leaves the previous checkpoint untouched; a failed save
removes its temp folder. A kill between the renames that publish a save (the re-save of an existing
step moves it aside first) is repaired when checkpoints are next listed: the finished copy is put
back under the step's name. Old checkpoints lose `COMPLETE` before their shards. Reading never
unpickles freely (engine/trainer/safe_metadata.py). LoRA runs save only the trainable (adapter)
parameters.
"""

from __future__ import annotations

import errno
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

from osstune.engine.session.run_folder import (  # noqa: F401 - the folder's layout, re-exported
    CHECKPOINTS_DIR,
    COMPLETE,
    checkpoints_root,
    complete_checkpoints,
    recoverable_checkpoints,
)
from osstune.engine.trainer.safe_metadata import SafeLoadPlanner, SafeReader, UnsafeMetadataError

# A single-process run saves without a process group on purpose; DCP warns about it every time.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or")

STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 1
# A save that fails with less than this free on the disk is called a full disk.
FULL_DISK_BYTES = 16 << 20


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
    pack_len: int | None = None  # the packed row length the run trained on (older saves: None)


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def recover_interrupted_publish(output_dir: Path) -> list[Path]:
    """Put back under its name a step that a kill inside `_publish` left only as a finished
    `.tmp-step-N` (all shards and COMPLETE written, not yet renamed) or, during the re-save of
    an existing step, as `.old-step-N` (moved aside, the new one not yet in place): the copies
    `run_folder.recoverable_checkpoints` lists, the newer (`.tmp-`) first. Only the engine calls
    it, holding the folder's lock, when it resumes; every rank may: a lost race is ignored."""
    recovered = []
    copies = recoverable_checkpoints(output_dir)
    for copy in sorted(copies, key=lambda p: not p.name.startswith(".tmp-")):
        final = copy.parent / copy.name.split("-", 1)[1]
        if final.exists():  # the newer copy of the same step went back first
            continue
        try:
            copy.rename(final)
        except OSError:
            continue  # another rank renamed it (or its copy) first
        recovered.append(final)
    return recovered


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest finished checkpoint (read only: see `recover_interrupted_publish`)."""
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


class CheckpointSaveError(RuntimeError):
    """A save that could not be written (disk full, read-only folder); the temp folder is gone
    and the previous checkpoint is untouched. `disk_full` tells ENOSPC/EDQUOT from the rest."""

    def __init__(self, message: str, disk_full: bool) -> None:
        super().__init__(message)
        self.disk_full = disk_full


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`: itself, its cause, or one rank's failure inside a DCP error."""
    seen: list[BaseException] = [e]
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict):
        for failure in failures.values():
            seen.extend(x for x in (failure if isinstance(failure, tuple) else (failure,))
                        if isinstance(x, BaseException))
    seen += [x.__cause__ for x in list(seen) if x.__cause__ is not None]
    return next((x for x in seen if isinstance(x, OSError)), None)


def all_ok(ok: bool) -> bool:
    """Collective: True when every rank's `ok` is True (so no rank waits on a failed one)."""
    if not _is_dist():
        return ok
    flag = torch.tensor([0 if ok else 1], dtype=torch.int32)
    dist.all_reduce(flag)  # a CPU tensor: the gloo side of "cuda:nccl,cpu:gloo"
    return int(flag.item()) == 0


def _write_shards(tmp: Path, model: nn.Module, optimizer: torch.optim.Optimizer, lora: bool
                  ) -> BaseException | None:
    """This rank's shards and RNG into `tmp`; returns the failure instead of raising it."""
    try:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(lora))
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
        torch.save(rng_state(), tmp / "rng" / f"rank-{_rank()}.pt")
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - a full disk can be a RuntimeError
        return e
    return None


def _publish(tmp: Path, final: Path, trainer: TrainerState) -> None:
    """Rank 0: bookkeeping, the COMPLETE marker last, then one rename onto the step's name."""
    (tmp / STATE_FILE).write_text(json.dumps(trainer.__dict__, indent=2), encoding="utf-8")
    (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
    old = final.with_name(f".old-{final.name}")
    if final.exists():  # re-saving the same step after a resume: swap, then drop the old one
        remove_checkpoint(old)
        final.rename(old)
    tmp.rename(final)
    remove_checkpoint(old)


def remove_checkpoint(folder: Path) -> None:
    """COMPLETE goes first: a kill midway leaves a folder that no longer looks finished."""
    if not folder.exists():
        return
    (folder / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def prune(output_dir: Path, keep_last: int) -> None:
    """Drop all but the newest `keep_last` finished checkpoints, and leftovers of killed saves
    or deletions (unfinished `step-*`, `.tmp-*`, `.old-*`)."""
    root = checkpoints_root(output_dir)
    for old in complete_checkpoints(output_dir)[:-keep_last]:
        remove_checkpoint(old)
    for leftover in root.iterdir():
        unfinished = leftover.name.startswith("step-") and not (leftover / COMPLETE).is_file()
        if leftover.is_dir() and (unfinished or leftover.name.startswith((".tmp-", ".old-"))):
            shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(output_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    trainer: TrainerState, keep_last: int, lora: bool) -> Path:
    """Collective: every rank calls it. Returns the final folder.

    Everything is written into `.tmp-step-N` and renamed once all ranks finished; on a failure
    the temp folder is removed and CheckpointSaveError raised on every rank, the previous
    checkpoint (also a previous `step-N`) untouched.
    """
    root = checkpoints_root(output_dir)
    final = root / step_dir_name(trainer.step)
    tmp = root / f".tmp-{final.name}"
    failure: BaseException | None = None
    if _rank() == 0:
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "rng").mkdir(parents=True)
        except OSError as e:
            failure = e
    if all_ok(failure is None):
        failure = _write_shards(tmp, model, optimizer, lora)
    if all_ok(failure is None) and _rank() == 0:
        try:
            _publish(tmp, final, trainer)
            prune(output_dir, keep_last)
        except OSError as e:
            failure = e
    if not all_ok(failure is None):
        free = _free_bytes(root)  # before the temp folder goes: a full disk shows here
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _save_error(final, failure, free)
    return final


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return -1


def _save_error(final: Path, failure: BaseException | None, free: int) -> CheckpointSaveError:
    """ENOSPC/EDQUOT, or any failure with the disk (nearly) full when it happened: torch's
    writer reports a full disk as `RuntimeError: ... unexpected pos`, without an errno."""
    err = _os_error(failure) if failure is not None else None
    if (err is not None and err.errno in (errno.ENOSPC, errno.EDQUOT)) or \
            0 <= free < FULL_DISK_BYTES:
        return CheckpointSaveError(f"checkpoint {final}: not saved: No space left on device "
                                   f"({max(free, 0)} bytes were free when the write failed)",
                                   disk_full=True)
    if err is not None:
        what = err.strerror or str(err)
        return CheckpointSaveError(f"checkpoint {final}: not saved: {what}"
                                   + (f" ({err.filename})" if err.filename else ""),
                                   disk_full=False)
    if failure is not None:
        return CheckpointSaveError(f"checkpoint {final}: not saved: {_reason(failure)}",
                                   disk_full=False)
    return CheckpointSaveError(f"checkpoint {final}: another rank failed to write its shard",
                               disk_full=False)


def _check_shards(folder: Path) -> None:
    """The index reads and every byte range it names exists: catches truncated shards early."""
    try:
        metadata = SafeReader(str(folder)).read_metadata()
    except UnsafeMetadataError as e:
        raise CheckpointError(f"checkpoint {folder}: untrusted .metadata: {e}; nothing from it "
                              "was loaded") from None
    except Exception as e:
        raise CheckpointError(f"checkpoint {folder}: corrupt .metadata ({_reason(e)})") from None
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = info.offset + info.length
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, end in needed.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"checkpoint {folder}: .metadata names a shard outside the "
                                  f"folder ({name}); refused")
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
        dcp.load(state, storage_reader=SafeReader(str(folder)), planner=SafeLoadPlanner())
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
        dcp.load({"model": sd}, storage_reader=SafeReader(str(folder)),
                 planner=SafeLoadPlanner())
    except (Exception, CheckpointException) as e:
        raise CheckpointError(f"checkpoint {folder}: corrupt or incompatible: {_reason(e)}"
                              ) from None
    set_model_state_dict(model, sd)
