"""SVG snapshots of each wizard screen at the classic 80x24 terminal and at 120x36
(tests/test_tui_fit.py checks what must fit at both; the screens' behaviour is in
test_tui_setup_screens.py and test_tui_training_screen.py).

The hardware profile is fixed and the engine is scripted (tests/tui_fixtures.py), so every
snapshot is deterministic; tests/test_tui_flow.py runs the real engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from screen_fixtures import (
    finished_run,
    make_app,
    quiet_and_isolated,  # noqa: F401 (autouse)
    scripted_training,
    steady,
    to_dataset,
    to_review,
)
from tui_fixtures import (
    ScriptedLauncher,
    h100_profile,
    open_training,
    screen_name,
    to_presets,
    wait_until,
)

from osstune.engine.plan.config import load_config

SNAPSHOT_SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]


# ----------------------------------------------------------------------------- snapshots

@pytest.mark.parametrize("size", SNAPSHOT_SIZES)
def test_snapshot_hardware(snap_compare, tmp_path: Path, size) -> None:  # noqa: ANN001
    app = make_app(tmp_path, h100_profile(2))

    async def ready(pilot) -> None:  # noqa: ANN001
        await wait_until(pilot, lambda: app.plan.recommendation is not None)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SNAPSHOT_SIZES)
def test_snapshot_presets(snap_compare, tmp_path: Path, size) -> None:  # noqa: ANN001
    assert snap_compare(make_app(tmp_path, h100_profile(1)), terminal_size=size,
                        run_before=to_presets)


@pytest.mark.parametrize("size", SNAPSHOT_SIZES)
def test_snapshot_dataset(snap_compare, tmp_path: Path, size) -> None:  # noqa: ANN001
    async def second_example_with_ids(pilot) -> None:  # noqa: ANN001
        await to_dataset(pilot)
        await pilot.press("pagedown", "ctrl+t")
        steady(pilot.app)

    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=second_example_with_ids)


@pytest.mark.parametrize("size", SNAPSHOT_SIZES)
def test_snapshot_review_with_an_error(snap_compare, tmp_path: Path, size) -> None:  # noqa: ANN001
    async def bad_learning_rate(pilot) -> None:  # noqa: ANN001
        await to_review(pilot)
        pilot.app.screen.query_one("#f-training-learning_rate").value = "5"
        steady(pilot.app)
        await pilot.pause()

    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=bad_learning_rate)


@pytest.mark.parametrize("size", SNAPSHOT_SIZES)
def test_snapshot_training_eight_gpus(snap_compare, tmp_path: Path, size) -> None:  # noqa: ANN001
    launcher = ScriptedLauncher(gpus=8)

    async def run(pilot) -> None:  # noqa: ANN001
        await scripted_training(pilot, launcher, "gpt-oss-120b-fft-fsdp2-offload", steps=40)

    assert snap_compare(make_app(tmp_path, h100_profile(8), launcher), terminal_size=size,
                        run_before=run)


@pytest.mark.parametrize("size", SNAPSHOT_SIZES)
def test_snapshot_done(snap_compare, tmp_path: Path, size) -> None:  # noqa: ANN001
    launcher = ScriptedLauncher(gpus=1)

    async def finish(pilot) -> None:  # noqa: ANN001
        await scripted_training(pilot, launcher, "gpt-oss-20b-lora-1gpu", steps=3)
        launcher.process.finish()
        await wait_until(pilot, lambda: not pilot.app.screen.running, what="the end")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen_name(pilot.app) == "DoneScreen")

    assert snap_compare(make_app(tmp_path, h100_profile(1), launcher), terminal_size=size,
                        run_before=finish)


@pytest.mark.parametrize("size", SNAPSHOT_SIZES)
def test_snapshot_resume_dialog(snap_compare, tmp_path: Path, size) -> None:  # noqa: ANN001
    cfg = load_config("tiny-cpu-demo")

    async def existing_output(pilot) -> None:  # noqa: ANN001
        finished_run(cfg.output.dir)
        await open_training(pilot, "tiny-cpu-demo", cfg)
        await wait_until(pilot, lambda: screen_name(pilot.app) == "ResumeDialog")

    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=existing_output)
