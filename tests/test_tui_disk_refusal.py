"""Issue 17 through the wizard, at 80x24 and 120x36: a 1x H200 with 51 GiB free disk is offered
the 20b LoRA preset; when the disk at the output folder is too small for what the run downloads
and writes, the real pre-flight refuses before any engine starts, the refusal reads as one (not an
engine crash), the footer offers `f` only while it applies and `f` starts the run forced; the
memory panel shows the run's GPU from its config all along."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_tui_fit import SIZES, assert_footer_fits, force_refused_start, screen_lines, settle
from tui_fixtures import ScriptedLauncher, run_async, screen_name, wait_until

from osstune.engine.plan.hardware import HardwareProfile, load_profile
from osstune.engine.plan.preflight import preflight
from osstune.tui.app import OsstuneApp
from osstune.tui.screens.training import TrainingScreen
from osstune.tui.widgets.memory_panel import MemoryPanel

H200 = Path(__file__).parent / "profiles" / "1xh200-141gb-disk51.json"
LORA = "gpt-oss-20b-lora-1gpu"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # nothing cached here


def h200(cached: bool) -> HardwareProfile:
    profile = load_profile(H200)
    return dataclasses.replace(profile, hf_cached_models=["openai/gpt-oss-20b"] if cached else [])


def small_disk(monkeypatch: pytest.MonkeyPatch, free_gib: float) -> None:
    """The output folder's filesystem has `free_gib` free (what the pre-flight reads)."""
    monkeypatch.setattr("osstune.engine.plan.hardware.free_gib", lambda _path: free_gib)


def text(app) -> str:  # noqa: ANN001
    return "\n".join(screen_lines(app))


async def through_the_wizard(pilot) -> TrainingScreen:  # noqa: ANN001
    """Hardware -> Preset (the recommended one) -> Dataset -> Review -> Start training."""
    app = pilot.app
    await wait_until(pilot, lambda: app.plan.recommendation is not None, what="the hardware")
    await settle(pilot)
    assert f"{LORA} is the most capable preset that fits this machine" in text(app)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen_name(app) == "PresetScreen")
    await settle(pilot)
    row = next(line for line in screen_lines(app) if f" {LORA} " in line)
    assert "★" in row and "fits" in row and "does-not-fit" not in row
    await pilot.press("enter")
    await wait_until(pilot, lambda: getattr(app.screen, "preview", None) is not None,
                     timeout=60, what="the dataset preview")
    await pilot.press("ctrl+n")
    await wait_until(pilot, lambda: screen_name(app) == "ReviewScreen")
    await settle(pilot)
    await pilot.press("ctrl+n")
    await wait_until(pilot, lambda: screen_name(app) == "TrainingScreen", what="training")
    return app.screen


def panel_shows_the_gpu(screen: TrainingScreen) -> None:
    panel = screen.query_one(MemoryPanel)
    assert [(g.rank, g.name) for g in panel.gpus] == [(0, "NVIDIA H200")]
    rendered = str(panel.render())
    assert "waiting for the first step" in rendered and "no GPU in this run" not in rendered


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_h200_small_disk_refused_then_forced_with_f(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size) -> None:  # noqa: ANN001
    small_disk(monkeypatch, 5.0)  # < the 12.8 GiB download + adapter checkpoints
    launcher = ScriptedLauncher(gpus=1, preflight=preflight)  # the real pre-flight
    app = OsstuneApp(lambda: h200(cached=False), launcher, tmp_path / "wizard.json")
    async with app.run_test(size=size) as pilot:
        screen = await through_the_wizard(pilot)
        await wait_until(pilot, lambda: screen.session is not None and not screen.running,
                         what="the refusal")
        await settle(pilot)
        assert launcher.calls == []  # refused before any engine started
        assert "refused by the pre-flight" in screen_lines(app)[1]
        error = str(screen.query_one("#run-error").content)
        assert error.startswith("not started: disk: 5 GiB free at ")
        assert "this config needs ~13.0 GiB (model download (not in the HF cache) 12.8" in error
        assert "exited with code" not in error and "f runs it anyway" in error
        panel_shows_the_gpu(screen)
        await force_refused_start(app, pilot, screen, launcher)
        assert "s Stop+save" in screen_lines(app)[-1]
        panel_shows_the_gpu(screen)
        await pilot.press("f")  # nothing to force while it runs
        await settle(pilot)
        assert len(launcher.calls) == 1
        launcher.process.run_start(total=10)
        launcher.process.step(1, 10)
        await wait_until(pilot, lambda: screen.snapshot.step == 1, what="the first step")
        assert "running" in screen_lines(app)[1]


@run_async
async def test_h200_with_the_model_cached_starts_on_a_small_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_disk(monkeypatch, 5.0)  # LoRA writes ~0.2 GiB when nothing is downloaded
    launcher = ScriptedLauncher(gpus=1, preflight=preflight)
    app = OsstuneApp(lambda: h200(cached=True), launcher, tmp_path / "wizard.json")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        app.plan.choose_preset(LORA)
        from osstune.engine.plan.config import load_config

        await app.push_screen(TrainingScreen(load_config(LORA)))
        await wait_until(pilot, launcher.started.is_set, what="the start")
        assert launcher.calls == [(app.screen.config.output.dir, False, False)]  # not forced
        await settle(pilot)
        assert "f Run anyway" not in screen_lines(app)[-1]
        panel_shows_the_gpu(app.screen)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_disk_refusal(snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               size) -> None:  # noqa: ANN001
    from osstune.engine.plan.config import load_config

    small_disk(monkeypatch, 5.0)
    launcher = ScriptedLauncher(gpus=1, preflight=preflight)
    app = OsstuneApp(lambda: h200(cached=False), launcher, tmp_path / "wizard.json")

    async def refused(pilot) -> None:  # noqa: ANN001
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        app.plan.choose_preset(LORA)
        await app.push_screen(TrainingScreen(load_config(LORA)))
        screen = app.screen
        await wait_until(pilot, lambda: screen.session is not None and not screen.running)
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=refused)


class StaleLauncher(ScriptedLauncher):
    """The front-end's pre-flight passes (it looked before the machine changed); the first start
    is the real engine, whose own pre-flight refuses; a forced start is scripted."""

    def __init__(self) -> None:
        super().__init__(gpus=1)
        self.engine = None

    def spawn(self, cfg, output_dir: Path, *, resume: bool, force: bool, lock):  # noqa: ANN001, ANN201
        if force:
            return super().spawn(cfg, output_dir, resume=resume, force=force, lock=lock)
        from osstune.engine.session.run_session import EngineLauncher

        self.engine = EngineLauncher().spawn(cfg, output_dir, resume=resume, force=force,
                                             lock=lock)
        return self.engine


@pytest.mark.slow
@run_async
async def test_a_refusal_only_the_engine_finds_is_shown_as_one_and_forced(
        tmp_path: Path) -> None:
    from osstune.engine.plan.config import load_config

    # more checkpoints kept than any disk holds: the engine's pre-flight refuses on disk
    cfg = load_config("tiny-cpu-demo", ["max_steps=100000", "save_steps=1",
                                        "output.keep_last=100000"])
    launcher = StaleLauncher()
    app = OsstuneApp(lambda: h200(cached=False), launcher, tmp_path / "wizard.json")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        await app.push_screen(TrainingScreen(cfg))
        screen = app.screen
        await wait_until(pilot, lambda: launcher.engine is not None and not screen.running,
                         timeout=120, what="the engine's refusal")
        await settle(pilot)
        assert launcher.engine.poll() == 2 and launcher.calls == []
        error = str(screen.query_one("#run-error").content)
        assert error.startswith("preflight: disk: ") and "this config needs ~28" in error
        assert "exited with code" not in error and "f runs it anyway" in error
        assert_footer_fits(app, "f Run anyway")
        await pilot.press("f")
        await wait_until(pilot, launcher.started.is_set, what="the forced start")
        assert launcher.calls == [(cfg.output.dir, False, True)]
        await wait_until(pilot, lambda: screen.running)
        await settle(pilot)
        assert "f Run anyway" not in screen_lines(app)[-1]
