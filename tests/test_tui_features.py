"""The wizard's side of the fine-tuner features: the eval loss as a second line on the Training
screen's chart, and `osstune chat` offered on the Done screen (`c` hands the terminal to it, or,
where the terminal cannot be handed over (headless), says the command to run)."""

from __future__ import annotations

from pathlib import Path

from screen_fixtures import finish_to_done, scripted_run
from tui_fixtures import (
    run_async,
    wait_until,
)


@run_async
async def test_training_chart_shows_eval_loss(tmp_path: Path, monkeypatch) -> None:
    from osstune.tui.widgets.loss_chart import EVAL_MARK, LossChart

    monkeypatch.chdir(tmp_path)
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=10,
                            via_presets=True) as (pilot, launcher):
        app = pilot.app
        launcher.process.writer.emit("eval", step=10, loss=2.5, trained_tokens=100)
        chart = app.screen.query_one(LossChart)
        await wait_until(pilot, lambda: bool(chart.eval_history), what="the eval point")
        await pilot.pause()
        assert "eval 2.5000" in str(chart.border_title)
        assert EVAL_MARK in str(chart.render())


@run_async
async def test_done_screen_c_offers_chat(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    shown: list[str] = []
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=2,
                            via_presets=True) as (pilot, launcher):
        app = pilot.app
        await finish_to_done(pilot, launcher)
        body = str(app.screen.query_one("#done-body").render())
        assert "$ osstune chat ./outputs/gpt-oss-20b-lora" in body
        monkeypatch.setattr(app.screen, "notify", lambda message, **kw: shown.append(message))
        await pilot.press("c")
        await pilot.pause()
    assert shown == ["run in a terminal: osstune chat ./outputs/gpt-oss-20b-lora"]
