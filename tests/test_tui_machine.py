"""The wizard at 80x24 and 120x36, continued (helpers in tests/test_tui_fit.py): the preset is
remembered per machine, a `--hardware FILE` plan is pre-flighted against this machine with a
refusal shown as one, the engine log scrolls, and Done offers `osstune chat`."""

from __future__ import annotations

from pathlib import Path

import pytest
from screen_fixtures import (  # the tui_fixtures helpers they build on, too
    ScriptedLauncher,
    cpu_profile,
    finish_to_done,
    h100_profile,
    make_app,
    open_training,
    screen_name,
    scripted_run,
    to_presets,
    wait_until,
)
from test_tui_fit import SIZES, assert_footer_fits, force_refused_start, screen_lines, settle
from textual.widgets import DataTable
from tui_fixtures import run_async

from osstune.tui.app import OsstuneApp
from osstune.tui.settings import Settings, machine_key
from osstune.tui.widgets.log_tail import LogTail


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ----------------------------------------------------------------------------- 5. preset memory


def cursor_preset(app) -> str:  # noqa: ANN001
    table = app.screen.query_one(DataTable)
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_remembered_preset_is_preselected_on_its_own_machine(tmp_path: Path, size) -> None:  # noqa: ANN001
    one = h100_profile(1)
    Settings(preset="gpt-oss-20b-lora-mxfp4",
             presets={machine_key(one): "gpt-oss-20b-lora-mxfp4"}).save(tmp_path / "wizard.json")
    app = make_app(tmp_path, one)
    async with app.run_test(size=size) as pilot:
        await to_presets(pilot)
        assert app.plan.recommendation.recommended != "gpt-oss-20b-lora-mxfp4"
        assert cursor_preset(app) == "gpt-oss-20b-lora-mxfp4"


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_another_machine_gets_its_recommended_preset(tmp_path: Path, size) -> None:  # noqa: ANN001
    Settings(preset="gpt-oss-20b-lora-mxfp4",  # chosen on a 1-GPU machine, fits this one too
             presets={machine_key(h100_profile(1)): "gpt-oss-20b-lora-mxfp4"}
             ).save(tmp_path / "wizard.json")
    app = make_app(tmp_path, h100_profile(8))
    async with app.run_test(size=size) as pilot:
        await to_presets(pilot)
        rec = app.plan.recommendation
        assert any(v.name == "gpt-oss-20b-lora-mxfp4" and v.verdict == "fits"
                   for v in rec.verdicts)
        assert cursor_preset(app) == rec.recommended != "gpt-oss-20b-lora-mxfp4"
        await pilot.press("down", "enter")  # a choice here is remembered for this machine only
        await wait_until(pilot, lambda: screen_name(app) == "DatasetScreen")
        chosen = app.plan.preset
    saved = Settings.load(tmp_path / "wizard.json").presets
    assert saved == {machine_key(h100_profile(1)): "gpt-oss-20b-lora-mxfp4",
                     machine_key(h100_profile(8)): chosen}


# ----------------------------------------------------------------------------- 6. --hardware


class SpyLauncher(ScriptedLauncher):
    """The real pre-flight, recording which hardware profile it was handed (None: probe)."""

    def __init__(self) -> None:
        from osstune.engine.plan.preflight import preflight

        self.profiles: list = []

        def spy(cfg, output_dir, **kw):  # noqa: ANN001, ANN003, ANN202
            self.profiles.append(kw["profile"])
            return preflight(cfg, output_dir, **kw)

        super().__init__(gpus=1, preflight=spy)


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_a_profile_file_plan_is_preflighted_against_this_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size) -> None:  # noqa: ANN001
    monkeypatch.setattr("osstune.engine.plan.preflight.probe", lambda *a, **k: cpu_profile())
    launcher = SpyLauncher()
    app = make_app(tmp_path, h100_profile(1), launcher, profile_is_this_machine=False)
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        assert "a run starts on this machine" in str(app.screen.query_one("#recommendation")
                                                      .content)
        await open_training(pilot, "gpt-oss-20b-lora-1gpu")  # fits the file's H100, not this CPU
        screen = app.screen
        await wait_until(pilot, lambda: screen.session is not None and not screen.running,
                         what="the refusal")
        await settle(pilot)
        assert launcher.profiles == [None] and launcher.calls == []  # probed here, not started
        assert "refused by the pre-flight" in screen_lines(app)[1]
        error = str(screen.query_one("#run-error").content)
        assert "distributed.gpus: the config asks for 1 GPU(s) per node, 0 visible" in error
        assert "exited with code" not in error
        await force_refused_start(app, pilot, screen, launcher)


@run_async
async def test_a_probed_plan_is_preflighted_with_its_own_profile(tmp_path: Path) -> None:
    launcher = SpyLauncher()
    profile = h100_profile(1)
    app = make_app(tmp_path, profile, launcher)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        assert "a run starts on this machine" not in str(
            app.screen.query_one("#recommendation").content)
        await open_training(pilot, "tiny-cpu-demo", launcher=launcher)
        assert launcher.profiles == [profile]  # no second probe: the plan's is this machine's


def test_the_wizard_command_marks_a_profile_file_as_another_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from osstune.tui import output
    from osstune.tui.commands.wizard import open_wizard

    made: list[bool] = []
    monkeypatch.setattr(output, "is_terminal", lambda stream=None: True)
    monkeypatch.setattr(OsstuneApp, "run", lambda self: made.append(
        self.profile_is_this_machine))
    profile = Path(__file__).parent / "profiles"
    files = sorted(profile.glob("*.json"))
    assert files, "tests/profiles holds hardware profile files"
    open_wizard(str(files[0]))
    open_wizard(None)
    assert made == [False, True]


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_the_engine_log_scrolls_back_to_its_first_line(tmp_path: Path, size) -> None:  # noqa: ANN001
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=2,
                            size=size) as (pilot, launcher):
        app = pilot.app
        process = launcher.process
        process.stderr.extend(f"traceback line {i}" for i in range(60))
        process.stderr.append("RuntimeError: the real reason")
        process.finish("failed", 1)
        screen = app.screen
        await wait_until(pilot, lambda: not screen.running)
        await settle(pilot)
        log = screen.query_one(LogTail)
        assert log.lines[0] == "engine: starting" and len(log.lines) == 64
        assert "RuntimeError: the real reason" in "\n".join(screen_lines(app))  # the end in view
        log.focus()
        await pilot.press("home")
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "engine: starting" in text and "RuntimeError" not in text
        await pilot.press("end")
        await settle(pilot)
        assert "RuntimeError: the real reason" in "\n".join(screen_lines(app))


# ----------------------------------------------------------------------------- 7. done -> chat


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_done_offers_chat_with_the_result(tmp_path: Path, monkeypatch, size) -> None:  # noqa: ANN001
    shown: list[str] = []
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=2,
                            size=size) as (pilot, launcher):
        app = pilot.app
        await finish_to_done(pilot, launcher)
        await settle(pilot)
        assert "$ osstune chat ./outputs/gpt-oss-20b-lora" in "\n".join(screen_lines(app))
        assert_footer_fits(app, "c Chat with it")
        monkeypatch.setattr(app.screen, "notify", lambda message, **kw: shown.append(message))
        await pilot.press("c")
        await pilot.pause()
    assert shown == ["run in a terminal: osstune chat ./outputs/gpt-oss-20b-lora"]
