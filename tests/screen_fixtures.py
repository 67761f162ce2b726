"""The wizard screens' Pilot helpers: an app on a fixed profile with a scripted engine, the text a
widget shows, and the walks to the dataset, review and training screens (tests/tui_fixtures.py holds
the fakes they use)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input
from tui_fixtures import (
    ScriptedLauncher,
    cpu_profile,
    h100_profile,
    open_training,
    screen_name,
    to_presets,
    wait_until,
)

from osstune.tui.app import OsstuneApp

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def quiet_and_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative output dirs land here and print the same every time
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_app(tmp_path: Path, profile=None, launcher=None, **kw) -> OsstuneApp:  # noqa: ANN001, ANN003
    profile = profile or cpu_profile()
    return OsstuneApp(lambda: profile, launcher or ScriptedLauncher(), tmp_path / "wizard.json",
                      **kw)


def text_of(screen, selector: str) -> str:  # noqa: ANN001
    """The text a widget shows (a Static's content: Text, or a renderable such as SoftWrap)."""
    widget = screen.query_one(selector)
    content = getattr(widget, "content", None)
    return str(content) if content is not None else str(widget.render())


def steady(app) -> None:  # noqa: ANN001
    """No blinking cursors: a snapshot must not depend on when in the blink it was taken."""
    for field in app.screen.query(Input):
        field.cursor_blink = False


async def to_dataset(pilot) -> None:  # noqa: ANN001
    await to_presets(pilot)
    await pilot.press("enter")
    screen = pilot.app.screen
    # the first preview loads the tokenizer in a worker: slow on a loaded 2-core machine
    await wait_until(pilot, lambda: screen.preview is not None or "cannot" in text_of(
        screen, "#example-header"), timeout=90, what="the dataset preview")
    assert screen.preview is not None, text_of(screen, "#example-header")


async def to_review(pilot):  # noqa: ANN001, ANN201
    """From the start to the Review screen (through a dataset preview); returns the screen."""
    await to_dataset(pilot)
    await pilot.press("ctrl+n")
    await wait_until(pilot, lambda: screen_name(pilot.app) == "ReviewScreen")
    return pilot.app.screen


async def scripted_training(pilot, launcher: ScriptedLauncher, preset: str, steps: int) -> None:  # noqa: ANN001
    """The Training screen for `preset` on the scripted engine, `steps` steps into 100."""
    app = pilot.app
    await open_training(pilot, preset, launcher=launcher)
    process = launcher.process
    process.run_start(total=100)
    for step in range(1, steps + 1):
        process.step(step, 100, loss=2.0 + 1.0 / step + (step % 5) / 20)
    await wait_until(pilot, lambda: app.screen.snapshot.step == steps, what="the last step")


@asynccontextmanager
async def scripted_run(tmp_path: Path, preset: str, steps: int | None, gpus: int = 1,
                       size: tuple[int, int] = SIZE, via_presets: bool = False,
                       launcher: ScriptedLauncher | None = None) -> AsyncIterator[tuple[Any, Any]]:
    """The wizard on `gpus` H100s and the scripted engine, `steps` steps into a run of `preset`
    (through the Preset screen when `via_presets`; steps None: launched, nothing written yet):
    yields (pilot, launcher)."""
    launcher = launcher or ScriptedLauncher(gpus=gpus)
    app = make_app(tmp_path, h100_profile(gpus), launcher)
    async with app.run_test(size=size) as pilot:
        if via_presets:
            await to_presets(pilot)
        if steps is None:
            await open_training(pilot, preset, launcher=launcher)
        else:
            await scripted_training(pilot, launcher, preset, steps)
        await pilot.pause()
        await pilot.pause()
        yield pilot, launcher


async def finish_to_done(pilot, launcher: ScriptedLauncher) -> None:  # noqa: ANN001
    """The scripted run completes; Enter leads on to the Done screen."""
    launcher.process.finish()
    await wait_until(pilot, lambda: not pilot.app.screen.running, what="the end of the run")
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen_name(pilot.app) == "DoneScreen")


def finished_run(output_dir: str) -> None:
    """A folder that holds a run: events and a finished checkpoint (one with events only, a
    run that failed before its first save, does not hold it)."""
    done = Path(output_dir, "checkpoints", "step-000002")
    done.mkdir(parents=True)
    (done / "COMPLETE").write_text("ok\n")
    Path(output_dir, "events.jsonl").write_text("")
