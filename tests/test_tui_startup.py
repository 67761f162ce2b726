"""The wizard starts fast because it never imports the training stack, and bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from osstune.tui.cli import app

WIZARD_MODULES = [
    f"osstune.tui.{name}" for name in (
        "app", "render.run", "render.tokens", "settings", "commands.wizard",
        "screens.hardware", "screens.preset", "screens.dataset", "screens.review",
        "screens.training", "screens.done",
        "widgets.loss_chart", "widgets.memory_panel", "widgets.log_tail",
        "widgets.token_preview", "widgets.hardware_view")
]
HEAVY = ["torch", "transformers", "datasets", "peft", "accelerate"]

FIRST_SCREEN = """
import asyncio, json, sys, time
t0 = time.process_time()  # CPU seconds: a loaded machine does not inflate them
from osstune.engine.plan.hardware import load_profile
from osstune.tui.app import OsstuneApp
from osstune.engine.session.run_session import EngineLauncher

async def main():
    profile = load_profile(sys.argv[1])
    app = OsstuneApp(lambda: profile, EngineLauncher(), settings_path=None)
    async with app.run_test(size=(100, 30)) as pilot:
        while app.plan.recommendation is None:
            await pilot.pause(0.01)
        return time.process_time() - t0

seconds = asyncio.run(main())
heavy = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps({"seconds": seconds, "heavy": heavy}))
""".replace("HEAVY", repr(HEAVY))


def test_wizard_modules_import_no_training_stack() -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in WIZARD_MODULES) + \
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_first_screen_paints_quickly_without_torch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    profile = Path(__file__).parent / "profiles" / "1xh100-80gb.json"
    out = subprocess.run([sys.executable, "-c", FIRST_SCREEN, str(profile)], capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    # About 0.6 s of CPU here; a torch import alone costs more than the bound.
    assert result["seconds"] < 2.5, result


def test_bad_hardware_file_is_one_line_and_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "machine.json"
    bad.write_text('{"gpus": [{"name": "X"}], "ram_gib": 1, "cpu_count": 1, "disk_free_gib": 1}')
    result = CliRunner().invoke(app, ["--hardware", str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "memory_total_gib" in lines[0]


def test_wizard_refuses_without_a_terminal(tmp_path: Path) -> None:
    profile = Path(__file__).parent / "profiles" / "cpu-only.json"
    result = CliRunner().invoke(app, ["--hardware", str(profile)])
    assert result.exit_code == 2
    assert "needs a terminal" in result.output and "osstune run" in result.output
