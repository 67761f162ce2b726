"""What `osstune chat RUN_DIR` talks to: the run's export, its merged weights, or base + adapter.

Torch-free: the CLI refuses a bad folder here before a process starts, and the chat process
(engine/trainer/chat.py) asks the same function what to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osstune.engine.session.launch import CONFIG_FILE

CHAT_MODULE = "osstune.engine.trainer.chat"


class ChatTargetError(ValueError):
    """One line naming the folder and what is missing."""


@dataclass(frozen=True)
class ChatTarget:
    run_dir: Path
    kind: str  # export | merged | adapter
    path: Path

    @property
    def config(self) -> Path:
        return self.run_dir / CONFIG_FILE


def find_chat_target(run_dir: str | Path) -> ChatTarget:
    """The first of OUTPUT/export, OUTPUT/merged, OUTPUT/adapter that holds weights."""
    run = Path(run_dir)
    if not run.exists():
        raise ChatTargetError(f"{run}: no such run folder")
    if not run.is_dir() or not (run / CONFIG_FILE).is_file():
        raise ChatTargetError(f"{run}: not a run folder (no {CONFIG_FILE}); give the --output "
                              "folder of a run")
    for kind, marker in (("export", "config.json"), ("merged", "config.json"),
                         ("adapter", "adapter_config.json")):
        if (run / kind / marker).is_file():
            return ChatTarget(run, kind, run / kind)
    raise ChatTargetError(f"{run}: nothing to chat with yet: no export/, merged/ or adapter/ "
                          "(a run writes them when it completes; `osstune "
                          f"merge-sharded-fsdp-weights {run}` makes merged/ from a checkpoint)")
