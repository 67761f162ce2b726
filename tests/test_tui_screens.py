"""Each wizard screen driven with Pilot at 100x30, plus SVG snapshots of each screen at the
classic 80x24 terminal and at 120x36 (tests/test_tui_fit.py checks what must fit at both).

The hardware profile is fixed and the engine is scripted (tests/tui_fixtures.py), so every
snapshot is deterministic; tests/test_tui_flow.py runs the real engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from textual.widgets import Input
from tui_fixtures import (
    ScriptedLauncher,
    cpu_profile,
    h100_profile,
    run_async,
    screen_name,
    step_event,
    to_presets,
    wait_until,
)

from osstune.engine.plan.config import load_config
from osstune.tui.app import OsstuneApp
from osstune.tui.screens.training import RunProgress, TrainingScreen
from osstune.tui.settings import Settings
from osstune.tui.widgets.log_tail import LogTail
from osstune.tui.widgets.loss_chart import LossChart
from osstune.tui.widgets.memory_panel import MemoryPanel

SIZE = (100, 30)
SNAPSHOT_SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]


@pytest.fixture(autouse=True)
def _quiet_and_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative output dirs land here and print the same every time
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_app(tmp_path: Path, profile=None, launcher=None) -> OsstuneApp:  # noqa: ANN001
    profile = profile or cpu_profile()
    return OsstuneApp(lambda: profile, launcher or ScriptedLauncher(), tmp_path / "wizard.json")


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
    await wait_until(pilot, lambda: screen.preview is not None or "cannot" in text_of(
        screen, "#example-header"), what="the dataset preview")
    assert screen.preview is not None, text_of(screen, "#example-header")


async def to_review(pilot) -> None:  # noqa: ANN001
    await to_dataset(pilot)
    await pilot.press("ctrl+n")
    await wait_until(pilot, lambda: screen_name(pilot.app) == "ReviewScreen")


async def scripted_training(pilot, launcher: ScriptedLauncher, preset: str, steps: int) -> None:  # noqa: ANN001
    app = pilot.app
    await wait_until(pilot, lambda: app.plan.recommendation is not None)
    app.plan.choose_preset(preset)
    await app.push_screen(TrainingScreen(load_config(preset)))
    await wait_until(pilot, launcher.started.is_set, what="the launch")
    process = launcher.process
    process.run_start(total=100)
    for step in range(1, steps + 1):
        process.step(step, 100, loss=2.0 + 1.0 / step + (step % 5) / 20)
    await wait_until(pilot, lambda: app.screen.snapshot.step == steps, what="the last step")


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


# ----------------------------------------------------------------------------- behaviour

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
        await to_review(pilot)
        screen = app.screen
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
async def test_training_stop_then_resume(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=2)
    app = make_app(tmp_path, h100_profile(2), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await scripted_training(pilot, launcher, "gpt-oss-20b-fft-fsdp2-offload", steps=5)
        screen = app.screen
        assert len(screen.query_one(LossChart).history) == 5
        assert [g.rank for g in screen.query_one(MemoryPanel).gpus] == [0, 1]
        await pilot.press("s")
        await wait_until(pilot, lambda: not screen.running, what="the stop")
        assert launcher.process.stopped.is_set()
        assert "stopped" in text_of(screen, "#run-title")
        assert "r resumes" in text_of(screen, "#run-error")
        await pilot.press("r")
        await wait_until(pilot, lambda: len(launcher.calls) == 2)
        assert launcher.calls[1][1:] == (True, False)  # resume, not force


@run_async
async def test_training_crash_shows_error_hint_and_log(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await scripted_training(pilot, launcher, "gpt-oss-20b-lora-1gpu", steps=2)
        process = launcher.process
        process.stderr.append("torch.OutOfMemoryError: CUDA out of memory")
        process.writer.emit("error", kind="out_of_memory", message="CUDA out of memory at step 3",
                            hint="lower training.sequence_len or pick an offload preset")
        process.finish("failed", 1)
        screen = app.screen
        await wait_until(pilot, lambda: not screen.running)
        error = text_of(screen, "#run-error")
        assert "out_of_memory: CUDA out of memory at step 3" in error
        assert "hint: lower training.sequence_len" in error
        assert "torch.OutOfMemoryError: CUDA out of memory" in screen.query_one(LogTail).lines
        assert "failed (exit code 1)" in text_of(screen, "#run-title")
        await pilot.press("k")  # not running: kill is not offered
        assert not process.killed


@run_async
async def test_kill_needs_a_second_press(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await scripted_training(pilot, launcher, "gpt-oss-20b-lora-1gpu", steps=1)
        await pilot.press("k")
        assert not launcher.process.killed
        await pilot.press("k")
        assert launcher.process.killed
        await wait_until(pilot, lambda: not app.screen.running)
        assert "exit code -9" in text_of(app.screen, "#run-title")


def _finished_run(output_dir: str) -> None:
    """A folder that holds a run: events and a finished checkpoint (one with events only, a
    run that failed before its first save, does not hold it)."""
    done = Path(output_dir, "checkpoints", "step-000002")
    done.mkdir(parents=True)
    (done / "COMPLETE").write_text("ok\n")
    Path(output_dir, "events.jsonl").write_text("")


@run_async
async def test_existing_output_offers_resume(tmp_path: Path) -> None:
    launcher = ScriptedLauncher()
    cfg = load_config("tiny-cpu-demo")
    _finished_run(cfg.output.dir)
    app = make_app(tmp_path, launcher=launcher)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        app.plan.choose_preset("tiny-cpu-demo")
        await app.push_screen(TrainingScreen(cfg))
        await wait_until(pilot, lambda: screen_name(app) == "ResumeDialog")
        await pilot.press("escape")  # back: nothing launched, nothing touched
        await wait_until(pilot, lambda: screen_name(app) == "HardwareScreen")
        assert launcher.calls == []
        await app.push_screen(TrainingScreen(cfg))
        await wait_until(pilot, lambda: screen_name(app) == "ResumeDialog")
        await pilot.press("o")
        await wait_until(pilot, launcher.started.is_set)
        assert launcher.calls == [(cfg.output.dir, False, True)]


@run_async
async def test_progress_messages_coalesce_into_few_repaints(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await scripted_training(pilot, launcher, "gpt-oss-20b-lora-1gpu", steps=1)
        screen = app.screen
        session = screen.session
        calls = []
        real_snapshot = session.snapshot
        session.snapshot = lambda: calls.append(1) or real_snapshot()
        for _ in range(500):
            screen.post_message(RunProgress())
        await pilot.pause()
        assert 1 <= len(calls) <= 3


@run_async
async def test_quitting_mid_run_stops_the_engine_gracefully(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await scripted_training(pilot, launcher, "gpt-oss-20b-lora-1gpu", steps=1)
        await pilot.press("ctrl+q")
    assert launcher.process.stopped.is_set() and not launcher.process.killed
    assert launcher.process.stop_calls == 1  # a second SIGINT would make the engine abort


@pytest.mark.parametrize("size", SNAPSHOT_SIZES)
def test_snapshot_resume_dialog(snap_compare, tmp_path: Path, size) -> None:  # noqa: ANN001
    cfg = load_config("tiny-cpu-demo")

    async def existing_output(pilot) -> None:  # noqa: ANN001
        _finished_run(cfg.output.dir)
        await wait_until(pilot, lambda: pilot.app.plan.recommendation is not None)
        pilot.app.plan.choose_preset("tiny-cpu-demo")
        await pilot.app.push_screen(TrainingScreen(cfg))
        await wait_until(pilot, lambda: screen_name(pilot.app) == "ResumeDialog")

    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=existing_output)


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


@run_async
async def test_a_source_that_breaks_stops_the_engine_and_says_why(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await scripted_training(pilot, launcher, "gpt-oss-20b-lora-1gpu", steps=1)
        screen = app.screen

        def unreadable() -> list:
            raise PermissionError("events.jsonl: permission denied")

        screen.session.events.poll = unreadable
        await wait_until(pilot, lambda: not screen.running, what="the failure")
        assert launcher.process.stopped.is_set()
        error = text_of(screen, "#run-error")
        assert "cannot follow the run, asked it to stop: events.jsonl: permission denied" in error


@run_async
async def test_a_launch_that_fails_says_why_and_allows_going_back(tmp_path: Path) -> None:
    class BrokenLauncher(ScriptedLauncher):
        def spawn(self, cfg, output_dir, **_):  # noqa: ANN001, ANN003, ANN202
            raise PermissionError(f"{cfg.output.dir}: cannot create the output directory")

    launcher = BrokenLauncher()

    app = make_app(tmp_path, launcher=launcher)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        app.plan.choose_preset("tiny-cpu-demo")
        await app.push_screen(TrainingScreen(load_config("tiny-cpu-demo")))
        screen = app.screen
        await wait_until(pilot, lambda: "cannot start" in text_of(screen, "#run-error"))
        assert "./outputs/tiny-cpu-demo: cannot create the output directory" in text_of(
            screen, "#run-error")
        assert "not started" in text_of(screen, "#run-title")
        await pilot.press("escape")
        await wait_until(pilot, lambda: screen_name(app) == "HardwareScreen")


@run_async
async def test_stopping_status_holds_until_the_engine_ends(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1, finish_on_stop=False)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await scripted_training(pilot, launcher, "gpt-oss-20b-lora-1gpu", steps=1)
        screen = app.screen
        await pilot.press("s")
        launcher.process.step(2, 100)  # the engine finishes the step it was in
        launcher.process.writer.emit("checkpoint", path="ckpt/step-2", step=2)
        await wait_until(pilot, lambda: screen.snapshot.step == 2)
        assert "stopping: saving a checkpoint" in text_of(screen, "#run-title")
        assert "checkpoint at step 2: ckpt/step-2" in text_of(screen, "#run-notes")
        launcher.process.finish("stopped")
        await wait_until(pilot, lambda: not screen.running)
        assert "stopped (exit code 0)" in text_of(screen, "#run-title")


def test_done_commands_follow_the_method() -> None:
    from osstune.tui.screens.done import next_commands

    lora = dict(next_commands(load_config("gpt-oss-20b-lora-1gpu"), {"adapter": "o/adapter"}))
    merge = lora["merge the adapter into full weights"]
    assert merge == "osstune merge-lora ./outputs/gpt-oss-20b-lora"  # the run folder, as it expects
    assert lora["serve with vLLM"].startswith("vllm serve outputs/gpt-oss-20b-lora/merged ")
    fsdp = next_commands(load_config("gpt-oss-120b-fft-fsdp2-offload"), {})
    assert fsdp[0][1].startswith("osstune merge-sharded-fsdp-weights ")
    assert "--tensor-parallel-size 8" in dict(fsdp)["serve with vLLM"]
    tiny = dict(next_commands(load_config("tiny-cpu-demo"), {"export": "run/export"}))
    assert list(tiny) == ["chat with it (c)", "serve with vLLM", "serve with SGLang"]
    assert tiny["serve with SGLang"].endswith("--model-path run/export --tp 1")


@run_async
async def test_a_preflight_refusal_can_be_overridden(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        app.plan.choose_preset("gpt-oss-20b-lora-1gpu")
        await app.push_screen(TrainingScreen(load_config("gpt-oss-20b-lora-1gpu")))
        await wait_until(pilot, launcher.started.is_set)
        screen = app.screen
        await pilot.press("f")  # nothing to override yet
        assert len(launcher.calls) == 1
        launcher.process.writer.emit(
            "error", kind="preflight", message="needs 1 GPU; this machine has none",
            hint="pick a preset that fits this machine (osstune presets), or --force")
        launcher.process.finish("failed", 2)
        await wait_until(pilot, lambda: not screen.running)
        assert "f runs it anyway" in text_of(screen, "#run-error")
        await pilot.press("f")
        await wait_until(pilot, lambda: len(launcher.calls) == 2)
        assert launcher.calls[1][1:] == (False, True)


@run_async
async def test_done_offers_a_new_run_from_the_top(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await to_presets(pilot)
        await scripted_training(pilot, launcher, "gpt-oss-20b-lora-1gpu", steps=2)
        launcher.process.finish()
        await wait_until(pilot, lambda: not app.screen.running)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen_name(app) == "DoneScreen")
        await pilot.press("n")
        await wait_until(pilot, lambda: screen_name(app) == "HardwareScreen")
        assert len(app.screen_stack) == 2


def _footer_keys(screen) -> set[str]:  # noqa: ANN001
    from textual.widgets._footer import FooterKey

    return {key.key for key in screen.query(FooterKey)}


@run_async
async def test_a_refusal_found_before_the_engine_starts_is_forced_with_f(tmp_path: Path) -> None:
    from osstune.engine.plan.preflight import preflight

    launcher = ScriptedLauncher(gpus=1, preflight=preflight)  # the real pre-flight, no GPU here
    app = make_app(tmp_path, cpu_profile(), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        app.plan.choose_preset("gpt-oss-20b-lora-1gpu")
        await app.push_screen(TrainingScreen(load_config("gpt-oss-20b-lora-1gpu")))
        screen = app.screen
        await wait_until(pilot, lambda: screen.session is not None and not screen.running,
                         what="the refusal")
        assert launcher.calls == []  # no engine was started to learn this
        assert "refused by the pre-flight" in text_of(screen, "#run-title")
        error = text_of(screen, "#run-error")
        assert "not started: distributed.gpus: the config asks for 1 GPU(s)" in error
        assert "exited with code" not in error and "f runs it anyway" in error
        await pilot.pause()
        assert "f" in _footer_keys(screen)
        await pilot.press("f")
        await wait_until(pilot, launcher.started.is_set, what="the forced start")
        assert launcher.calls == [(screen.config.output.dir, False, True)]
        await wait_until(pilot, lambda: screen.running and "f" not in _footer_keys(screen))
        launcher.process.run_start(total=10)
        launcher.process.step(1, 10)
        await wait_until(pilot, lambda: screen.snapshot.step == 1)
        assert "running" in text_of(screen, "#run-title")


@run_async
async def test_memory_panel_knows_a_gpu_run_before_its_first_step(tmp_path: Path) -> None:
    launcher = ScriptedLauncher(gpus=1)
    app = make_app(tmp_path, h100_profile(1), launcher)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        app.plan.choose_preset("gpt-oss-20b-lora-1gpu")
        await app.push_screen(TrainingScreen(load_config("gpt-oss-20b-lora-1gpu")))
        await wait_until(pilot, launcher.started.is_set)
        panel = app.screen.query_one(MemoryPanel)
        assert [g.rank for g in panel.gpus] == [0]
        assert "waiting for the first step" in str(panel.render())
        assert "no GPU in this run" not in str(panel.render())


@run_async
async def test_a_live_run_in_the_output_folder_is_followed_not_restarted(tmp_path: Path) -> None:
    from osstune.engine.session.events import EventWriter
    from osstune.engine.session.lock import OutputLock

    launcher = ScriptedLauncher(gpus=1)
    cfg = load_config("tiny-cpu-demo")
    held = OutputLock.acquire(cfg.output.dir)  # a detached run owns the folder
    writer = EventWriter(cfg.output.dir)
    writer.emit("run_start", config={}, world_size=1, gpus=[], model={}, dataset={},
                total_steps=10, start_step=0)
    app = make_app(tmp_path, launcher=launcher)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        await app.push_screen(TrainingScreen(cfg))
        screen = app.screen
        await wait_until(pilot, lambda: screen.session is not None and screen.running)
        writer.emit("step", **step_event(1, 10, 0))
        await wait_until(pilot, lambda: screen.snapshot.step == 1, what="the live run's step")
        assert launcher.calls == [] and screen_name(app) == "TrainingScreen"
        writer.emit("run_end", status="completed", outputs={})
        held.release()
        await wait_until(pilot, lambda: not screen.running, what="the run's end")
        assert "completed (exit code 0)" in text_of(screen, "#run-title")
