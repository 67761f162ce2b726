"""`osstune chat RUN_DIR`: talk to a trained run (its export, merged weights, or base + adapter).

The model runs in its own process (`python -m osstune.engine.trainer.chat`; the CLI never imports
torch) with this terminal's stdin/stdout, so the analysis and final channels stream as they are
generated. A folder with nothing to load is refused here, in one line, before a process starts.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer

from osstune.tui import output


def chat_argv(run_dir: str, prompt: str | None = None, developer: str | None = None,
              reasoning_effort: str | None = None, temperature: float = 0.0, top_p: float = 1.0,
              max_new_tokens: int = 512, seed: int = 0) -> list[str]:
    """The chat process's command line (the wizard's Done screen shows the `osstune chat` one)."""
    from osstune.engine.session.chat_target import CHAT_MODULE

    argv = [sys.executable, "-m", CHAT_MODULE, run_dir, "--temperature", str(temperature),
            "--top-p", str(top_p), "--max-new-tokens", str(max_new_tokens), "--seed", str(seed)]
    for flag, value in (("--prompt", prompt), ("--developer", developer),
                        ("--reasoning-effort", reasoning_effort)):
        if value is not None:
            argv += [flag, value]
    return argv


def chat(
    run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="A run's output folder")],
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="Answer this one message and exit (default: read lines from stdin)")
    ] = None,
    developer: Annotated[str | None, typer.Option(
        "--developer", help="Developer instructions (the harmony developer message)")] = None,
    reasoning_effort: Annotated[str | None, typer.Option(
        "--reasoning-effort", help="low, medium or high (default: the run's dataset setting)")
    ] = None,
    temperature: Annotated[float, typer.Option(
        "--temperature", min=0.0, help="0 = greedy")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 1.0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 512,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed")] = 0,
) -> None:
    """Chat with a trained run: analysis and final channels streamed separately."""
    from osstune.engine.session.chat_target import ChatTargetError, find_chat_target

    if reasoning_effort not in (None, "low", "medium", "high"):
        output.fail(f"--reasoning-effort {reasoning_effort!r}: expected low, medium or high")
    try:
        find_chat_target(run_dir)
    except ChatTargetError as e:
        output.fail(str(e))
    argv = chat_argv(run_dir, prompt, developer, reasoning_effort, temperature, top_p,
                     max_new_tokens, seed)
    try:
        code = subprocess.call(argv)  # inherits stdin, stdout and stderr
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)
