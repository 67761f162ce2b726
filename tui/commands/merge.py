"""`osstune merge-lora` and `osstune merge-sharded-fsdp-weights`: write OUTPUT/merged.

Both take a run's output folder (it holds config.yaml) or the run's config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from osstune.tui import output

MERGE_MODULE = "osstune.engine.trainer.merge"

if TYPE_CHECKING:
    from osstune.engine.plan.config import RunConfig

TargetArg = Annotated[str, typer.Argument(metavar="CONFIG|DIR",
                                          help="The run's output folder or its config file")]


def resolve_run(target: str) -> tuple[RunConfig, Path]:
    """(config, output folder) for a run folder (with config.yaml) or a config file / preset."""
    from osstune.engine.plan.config import ConfigError, load_config
    from osstune.engine.session.launch import CONFIG_FILE

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


def _check_disk(cfg: RunConfig, kind: str, out: Path, dtype: str = "auto") -> None:
    """Refuse before loading anything when the merged model cannot fit on the disk."""
    from osstune.engine.plan.preflight import disk_problems
    from osstune.engine.plan.shapes import ShapeError
    from osstune.engine.plan.storage import merge_terms

    try:
        terms = merge_terms(cfg, kind, dtype)
    except ShapeError:
        return  # shapes unknown: the merge itself says what is wrong with the model
    problems = disk_problems(terms, out, "merging")
    if problems:
        output.fail("; ".join(problems), code=output.EXIT_PROBLEM)


def _merge(kind: str, target: str, extra: list[str] | None = None, dtype: str = "auto") -> None:
    """Run the merge in its own process (it imports torch; the CLI never does)."""
    import subprocess
    import sys

    from osstune.engine.session.events import EXIT_USER_ERROR
    from osstune.engine.session.launch import CONFIG_FILE

    cfg, out = resolve_run(target)  # refuses a bad target here, before a process starts
    _check_disk(cfg, kind, out, dtype)
    config = str(out / CONFIG_FILE) if Path(target).is_dir() else target
    argv = [sys.executable, "-m", MERGE_MODULE, kind, config, str(out), *(extra or [])]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("osstune: error: ")]
        reason = (lines[-1].removeprefix("osstune: error: ") if lines
                  else f"the merge process exited with code {proc.returncode}: "
                       + " | ".join(proc.stderr.strip().splitlines()[-3:]))
        # the merge's own one-line refusals (bad input, a full disk) are exit 2, as `run`'s
        output.fail(reason, code=output.EXIT_USAGE if proc.returncode == EXIT_USER_ERROR and lines
                    else output.EXIT_PROBLEM)
    output.print_line(f"merged weights: {proc.stdout.strip().splitlines()[-1]}")


DtypeOpt = Annotated[str, typer.Option(
    "--dtype", help="auto: packed MXFP4 experts (model.experts: mxfp4) stay MXFP4 in the hub's "
    "layout; bf16: a fully dequantized bf16 export")]


def merge_lora(target: TargetArg, dtype: DtypeOpt = "auto") -> None:
    """Merge the run's LoRA adapter into its base model (safetensors in OUTPUT/merged)."""
    if dtype not in ("auto", "bf16"):
        output.fail(f"--dtype {dtype!r}: expected auto or bf16")
    _merge("lora", target, ["--dtype", dtype], dtype)


def merge_sharded_fsdp_weights(target: TargetArg) -> None:
    """Merge the run's last sharded checkpoint into safetensors (OUTPUT/merged)."""
    _merge("sharded", target)
