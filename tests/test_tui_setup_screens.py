"""The wizard's setup screens (hardware, dataset, review) driven with Pilot at 100x30, on a fixed
profile and a scripted engine (tests/screen_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import yaml
from screen_fixtures import (
    SIZE,
    make_app,
    quiet_and_isolated,  # noqa: F401 (autouse)
    text_of,
    to_dataset,
    to_review,
)
from tui_fixtures import (
    ScriptedLauncher,
    cpu_profile,
    run_async,
    screen_name,
    wait_until,
)

from osstune.engine.plan.config import load_config
from osstune.tui.app import OsstuneApp
from osstune.tui.settings import Settings


@run_async
async def test_review_shows_errors_inline_and_blocks_start(tmp_path: Path) -> None:
    launcher = ScriptedLauncher()
    app = make_app(tmp_path, launcher=launcher)
    async with app.run_test(size=SIZE) as pilot:
        await to_review(pilot)
        screen = app.screen
        field = screen.query_one("#f-training-learning_rate")
        field.value = "5"
        await pilot.pause()
        errors = text_of(screen, "#review-errors")
        assert "training.learning_rate: Input should be less than 1 (got 5)" in errors
        assert field.has_class("-invalid")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert screen_name(app) == "ReviewScreen" and not launcher.calls
        field.value = "1e-4"
        screen.query_one("#f-training-max_steps").value = "3"
        await pilot.pause()
        assert not field.has_class("-invalid")
        command = text_of(screen, "#review-command")
        assert ("osstune run tiny-cpu-demo --set training.learning_rate=1e-4 "
                "--set training.max_steps=3") in command
        await pilot.press("ctrl+n")
        await wait_until(pilot, launcher.started.is_set)
        cfg_dir, resume, force = launcher.calls[0]
        assert (cfg_dir, resume, force) == ("./outputs/tiny-cpu-demo", False, False)
    assert Settings.load(tmp_path / "wizard.json") == Settings(
        "tiny-cpu-demo", "builtin:osstune-sample", "./outputs/tiny-cpu-demo",
        {"no GPU": "tiny-cpu-demo"})  # the preset chosen on this machine


@run_async
async def test_review_saves_and_never_overwrites(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await to_review(pilot)
        screen.query_one("#f-training-sequence_len").value = "256"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        # by default next to the run's outputs (the output directory of the plan)
        saved = tmp_path / "outputs" / "tiny-cpu-demo" / "tiny-cpu-demo-run.yaml"
        assert yaml.safe_load(saved.read_text())["training"]["sequence_len"] == 256
        assert ("osstune run outputs/tiny-cpu-demo/tiny-cpu-demo-run.yaml"
                in text_of(screen, "#review-command"))
        assert load_config(str(saved)).training.sequence_len == 256  # what `osstune run` reads
        before = saved.read_text()
        screen.query_one("#f-training-sequence_len").value = "128"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert saved.read_text() == before
        assert "--set training.sequence_len=128" in text_of(screen, "#review-command")


@run_async
async def test_dataset_errors_show_in_place(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await to_dataset(pilot)
        screen = app.screen
        assert text_of(screen, "#example-header").startswith("example 1/")
        path_field = screen.query_one("#f-dataset-path")
        path_field.value = "missing.jsonl"
        path_field.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.preview is None, what="the failed load")
        await wait_until(pilot, lambda: "cannot load" in text_of(screen, "#example-header"))
        header = text_of(screen, "#example-header")
        assert "missing.jsonl" in header
        assert screen_name(app) == "DatasetScreen"  # still here, still usable
        await pilot.press("ctrl+g")
        assert app.focused is screen.query_one("#jump")


@run_async
async def test_dataset_browsing_and_remembered_dataset(tmp_path: Path) -> None:
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, '
                    '{"role": "assistant", "content": "hello"}]}\n'
                    '{"messages": [{"role": "user", "content": "no answer"}]}\n')
    Settings(dataset=str(data)).save(tmp_path / "wizard.json")
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await to_dataset(pilot)
        screen = app.screen
        assert screen.query_one("#f-dataset-path").value == str(data)
        summary = text_of(screen, "#dataset-summary")
        assert "rows read: 2" in summary and "rows skipped: 1" in summary
        header = text_of(screen, "#example-header")
        assert header.startswith("example 1/1 · row 1")  # rows are 1-based
        await pilot.press("pagedown")  # already the last: stays
        assert screen.index == 0
        preview = text_of(screen, "#token-preview")
        assert "<|start|>assistant<|channel|>final<|message|>hello<|return|>" in preview
        assert "Reasoning: medium" in preview
        screen.query_one("#f-dataset-reasoning_effort").value = "high"  # reloads by itself
        await wait_until(pilot, lambda: "Reasoning: high" in text_of(screen, "#token-preview"))
        assert app.plan.overrides["dataset.reasoning_effort"] == "high"


@run_async
async def test_hardware_refresh_probes_again_and_failures_show_in_place(tmp_path: Path) -> None:
    from osstune.engine.plan.hardware import HardwareProfileError

    broken = HardwareProfileError("machine.json: gpus[0].memory_total_gib: missing")
    answers = [cpu_profile(), broken]

    def source():  # noqa: ANN202
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    app = OsstuneApp(source, ScriptedLauncher(), tmp_path / "wizard.json")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        assert "tiny-cpu-demo" in text_of(app.screen, "#recommendation")
        await pilot.press("r")
        await wait_until(pilot, lambda: "Cannot read" in text_of(app.screen, "#recommendation"))
        assert "gpus[0].memory_total_gib: missing" in text_of(app.screen, "#recommendation")
        assert answers == [] and screen_name(app) == "HardwareScreen"
