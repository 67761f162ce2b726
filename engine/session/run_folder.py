"""What a run's output folder holds, read without torch: finished checkpoints, results, and
whether an earlier attempt there left anything worth keeping.

A checkpoint is finished when its `step-NNNNNN` folder holds `COMPLETE` (written last, renamed
into place: engine/trainer/checkpoint.py). A folder whose earlier attempt left neither a finished
checkpoint nor a result (it failed before its first save) does not hold a run: the next run
starts over there instead of asking for --resume or --force.
"""

from __future__ import annotations

from pathlib import Path

from osstune.engine.session.events import EVENTS_FILE

CHECKPOINTS_DIR = "checkpoints"
COMPLETE = "COMPLETE"
RESULT_DIRS = ("export", "adapter", "merged")


def checkpoints_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def is_finished_checkpoint(folder: Path) -> bool:
    return Path(folder).is_dir() and (Path(folder) / COMPLETE).is_file()


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (half-written `.tmp-*` folders are never listed)."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and is_finished_checkpoint(p)]
    return sorted(found, key=lambda p: p.name)


def recoverable_checkpoints(output_dir: Path) -> list[Path]:
    """Finished copies a kill left mid-publish (`.tmp-step-N` not yet renamed, or `.old-step-N`
    moved aside during a re-save) whose `step-N` is missing. Only read here: the engine puts them
    back under their name when it resumes (engine/trainer/checkpoint.py
    `recover_interrupted_publish`), never a front-end or a merge,
    which could race a live run's rename."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    return sorted(p for prefix in (".tmp-", ".old-") for p in root.glob(f"{prefix}step-*")
                  if is_finished_checkpoint(p) and not (root / p.name[len(prefix):]).exists())


def resumable(output_dir: Path) -> bool:
    """`--resume` has something to load: a finished checkpoint, or one the engine will recover."""
    return bool(complete_checkpoints(output_dir) or recoverable_checkpoints(output_dir))


def holds_run(output_dir: Path) -> bool:
    """A finished checkpoint or a result (export, adapter, merged): what a new run must not
    overwrite without --resume or --force."""
    out = Path(output_dir)
    return resumable(out) or any((out / d).exists() for d in RESULT_DIRS)


def failed_attempt(output_dir: Path) -> bool:
    """An earlier attempt wrote events but left nothing to keep or resume."""
    return (Path(output_dir) / EVENTS_FILE).is_file() and not holds_run(output_dir)
