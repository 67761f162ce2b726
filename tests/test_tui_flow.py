"""The whole wizard, keyboard only, with the tiny CPU demo as the real engine subprocess.

Hardware is injected (a fixed CPU-only profile, so the tiny demo is the recommendation); the run
launcher is the real one (`EngineLauncher` -> engine.session.launch.TrainingProcess), so the loss
chart and the memory panel show what the engine actually wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_fixtures import cpu_profile, run_async, screen_name, wait_until

from osstune.engine.session.events import read_events
from osstune.engine.session.run_session import EngineLauncher
from osstune.tui.app import OsstuneApp
from osstune.tui.settings import Settings
from osstune.tui.widgets.log_tail import LogTail
from osstune.tui.widgets.loss_chart import LossChart
from osstune.tui.widgets.memory_panel import MemoryPanel

# Small enough to train in seconds on 2 cores, through the same inputs a user would edit.
REVIEW_EDITS = {
    "#f-training-max_steps": "3",
    "#f-training-sequence_len": "128",
    "#f-training-micro_batch_size": "1",
    "#f-training-gradient_accumulation_steps": "1",
    "#f-output-dir": "run-out",
}


@pytest.mark.slow
@run_async
async def test_wizard_runs_the_tiny_demo_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    profile = cpu_profile()
    app = OsstuneApp(lambda: profile, EngineLauncher(), tmp_path / "wizard.json")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None, what="the probe")
        assert app.plan.recommendation.recommended == "tiny-cpu-demo"
        await pilot.press("enter")  # hardware -> presets
        await wait_until(pilot, lambda: screen_name(app) == "PresetScreen")
        await pilot.press("enter")  # the recommended preset is preselected
        await wait_until(pilot, lambda: getattr(app.screen, "preview", None) is not None,
                         timeout=60, what="the dataset preview")
        await pilot.press("ctrl+n")  # dataset -> review
        await wait_until(pilot, lambda: screen_name(app) == "ReviewScreen")
        for selector, value in REVIEW_EDITS.items():
            app.screen.query_one(selector).value = value
        await pilot.pause()
        assert app.screen.valid, str(app.screen.query_one("#review-errors").render())
        await pilot.press("ctrl+n")  # start training
        await wait_until(pilot, lambda: screen_name(app) == "TrainingScreen")
        training = app.screen
        await wait_until(pilot, lambda: training.session is not None and not training.running,
                         timeout=150, what="the engine to finish")

        events = read_events(tmp_path / "run-out")
        steps = [e for e in events if e["type"] == "step"]
        assert [e["step"] for e in steps] == [1, 2, 3]
        chart = training.query_one(LossChart)
        assert [(p.step, p.loss) for p in chart.history] == [(e["step"], e["loss"]) for e in steps]
        memory = training.query_one(MemoryPanel).gpus
        assert [(g.rank, g.name, g.reserved_gib) for g in memory] == [
            (gpu["rank"], "cpu", gpu["device_mem_reserved_gib"]) for gpu in steps[-1]["gpus"]]
        assert any("[engine]" in line for line in training.query_one(LogTail).lines)
        title = str(training.query_one("#run-title").render())
        assert "completed (exit code 0)" in title
        assert "step 3/3" in str(training.query_one("#run-stats").render())

        await pilot.press("enter")  # training -> done
        await wait_until(pilot, lambda: screen_name(app) == "DoneScreen")
        body = str(app.screen.query_one("#done-body").render())
        end = events[-1]
        assert end["type"] == "run_end" and end["status"] == "completed"
        assert end["outputs"]["export"] in body
        assert "osstune run tiny-cpu-demo --set training.max_steps=3" in body
    assert Settings.load(tmp_path / "wizard.json") == Settings(
        "tiny-cpu-demo", "builtin:osstune-sample", "run-out", {"no GPU": "tiny-cpu-demo"})
