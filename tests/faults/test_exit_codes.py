"""What the engine ends with exit 2 (bad input, a full disk, a refused checkpoint) `osstune run`
and `osstune attach` end with exit 2 too, with the engine's one line and hint; other failures
are exit 1. The engine's error kinds and the front-ends' list are one list."""

from __future__ import annotations

import pytest
import typer

from osstune.engine.session.events import USER_ERROR_KINDS, ErrorEvent, RunEnd
from osstune.engine.session.fold import RunSnapshot
from osstune.engine.trainer import train
from osstune.tui.commands.run import _report

pytestmark = pytest.mark.faults


def _failed(kind: str, exit_code: int | None) -> RunSnapshot:
    error = ErrorEvent(v=1, type="error", time=0.0, kind=kind, message=f"{kind} went wrong",
                       hint="do this")
    end = RunEnd(v=1, type="run_end", time=0.0, status="failed", outputs={})
    return RunSnapshot(error=error, end=end, exit_code=exit_code)


def test_every_engine_user_error_kind_is_exit_2_for_the_front_ends():
    kinds = set(train.USER_ERRORS.values())
    assert kinds <= USER_ERROR_KINDS, kinds - USER_ERROR_KINDS
    # A failed save's kinds (SaveError) are user errors too: the engine returns exit 2 for them.
    assert {"disk_full", "checkpoint"} <= USER_ERROR_KINDS
    assert "internal" not in USER_ERROR_KINDS and "out_of_memory" not in USER_ERROR_KINDS


@pytest.mark.parametrize("kind,exit_code,expected", [
    ("disk_full", 2, 2), ("checkpoint", 2, 2), ("dataset", 2, 2), ("preflight", 2, 2),
    ("disk_full", None, 2),  # `attach`: the exit code went to the process that started it
    ("checkpoint", 1, 2),
    ("internal", 1, 1), ("out_of_memory", 3, 1), ("internal", None, 1),
])
def test_the_cli_exit_code_follows_the_engine_error(tmp_path, capsys, kind, exit_code, expected):
    with pytest.raises(typer.Exit) as done:
        _report(_failed(kind, exit_code), "cfg.yaml", tmp_path, 1)
    assert done.value.exit_code == expected
    err = capsys.readouterr().err
    assert err == f"osstune: error: {kind} went wrong (hint: do this)\n"


def test_merge_lora_on_a_run_without_an_adapter_is_one_line_and_exit_2(tmp_path):
    """The merge's own refusal (bad input) ends the CLI with exit 2, as `run`'s do."""
    import subprocess
    import sys

    from tests.engine_fixtures import REPO, engine_env, tiny_config, write_config

    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_config(tmp_path, method="lora", lora={"r": 2, "alpha": 4},
                      output={"dir": str(run)})
    write_config(run, cfg, "config.yaml")
    proc = subprocess.run([sys.executable, "-m", "osstune.tui.cli", "merge-lora", str(run)],
                          cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "no LoRA adapter here" in proc.stderr and "Traceback" not in proc.stderr
    assert not (run / "merged").exists()
