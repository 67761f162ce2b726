"""`osstune merge-lora` and `osstune merge-sharded-fsdp-weights`: write OUTPUT/merged.

Both take a run's output folder (it holds config.yaml) or the run's config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tui import output

if TYPE_CHECKING:
    from engine.config import RunConfig

TargetArg = Annotated[str, typer.Argument(metavar="CONFIG|DIR",
                                          help="The run's output folder or its config file")]


def resolve_run(target: str) -> tuple[RunConfig, Path]:
    """(config, output folder) for a run folder (with config.yaml) or a config file / preset."""
    from engine.config import ConfigError, load_config
    from engine.launch import CONFIG_FILE

    path = Path(target)
    try:
        if path.is_dir():
            if not (path / CONFIG_FILE).is_file():
                output.fail(f"{path}: not a run folder (no {CONFIG_FILE})")
            return load_config(str(path / CONFIG_FILE)), path
        cfg = load_config(target)
    except ConfigError as e:
        output.fail(str(e))
    return cfg, Path(cfg.output.dir)


def _merge(kind: str, target: str) -> None:
    from engine.checkpoint import CheckpointError
    from engine.merge import MergeError, merge_lora, merge_sharded_checkpoint
    from engine.model import ModelError
    from engine.tokenizer import TokenizerError

    cfg, out = resolve_run(target)
    try:
        merged = merge_lora(cfg, out) if kind == "lora" else merge_sharded_checkpoint(cfg, out)
    except (MergeError, CheckpointError, ModelError, TokenizerError) as e:
        output.fail(str(e), code=output.EXIT_PROBLEM)
    except OSError as e:
        output.fail(f"cannot write {out / 'merged'}: {e}", code=output.EXIT_PROBLEM)
    output.print_line(f"merged weights: {merged}")


def merge_lora(target: TargetArg) -> None:
    """Merge the run's LoRA adapter into its base model (safetensors in OUTPUT/merged)."""
    _merge("lora", target)


def merge_sharded_fsdp_weights(target: TargetArg) -> None:
    """Merge the run's last sharded checkpoint into safetensors (OUTPUT/merged)."""
    _merge("sharded", target)
