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


def holds_run(output_dir: Path) -> bool:
    """A finished checkpoint or a result (export, adapter, merged): what a new run must not
    overwrite without --resume or --force."""
    out = Path(output_dir)
    return bool(complete_checkpoints(out)) or any((out / d).exists() for d in RESULT_DIRS)


def failed_attempt(output_dir: Path) -> bool:
    """An earlier attempt wrote events but left nothing to keep or resume."""
    return (Path(output_dir) / EVENTS_FILE).is_file() and not holds_run(output_dir)
