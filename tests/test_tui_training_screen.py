"""The wizard's Training and Done screens driven with Pilot at 100x30 on a scripted engine
(tests/screen_fixtures.py): stop, resume, kill, crash, refusals, the live-run follow."""

from __future__ import annotations

from pathlib import Path

from screen_fixtures import (
    SIZE,
    finish_to_done,
    finished_run,
    make_app,
    quiet_and_isolated,  # noqa: F401 (autouse)
    scripted_run,
    text_of,
)
from tui_fixtures import (
    ScriptedLauncher,
    cpu_profile,
    open_training,
    run_async,
    screen_name,
    step_event,
    wait_until,
)

from osstune.engine.plan.config import load_config
from osstune.tui.screens.training import RunProgress, TrainingScreen
from osstune.tui.widgets.log_tail import LogTail
from osstune.tui.widgets.loss_chart import LossChart
from osstune.tui.widgets.memory_panel import MemoryPanel


@run_async
async def test_training_stop_then_resume(tmp_path: Path) -> None:
    async with scripted_run(tmp_path, "gpt-oss-20b-fft-fsdp2-offload", steps=5,
                            gpus=2) as (pilot, launcher):
        app = pilot.app
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
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=2) as (pilot, launcher):
        app = pilot.app
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
        notes = text_of(screen, "#run-notes")  # the error once: in its box, not again as a note
        assert "run failed" in notes and "CUDA out of memory" not in notes
        assert "torch.OutOfMemoryError: CUDA out of memory" in screen.query_one(LogTail).lines
        assert "failed (exit code 1)" in text_of(screen, "#run-title")
        await pilot.press("k")  # not running: kill is not offered
        assert not process.killed


@run_async
async def test_kill_needs_a_second_press(tmp_path: Path) -> None:
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=1) as (pilot, launcher):
        app = pilot.app
        await pilot.press("k")
        assert not launcher.process.killed
        await pilot.press("k")
        assert launcher.process.killed
        await wait_until(pilot, lambda: not app.screen.running)
        assert "exit code -9" in text_of(app.screen, "#run-title")


@run_async
async def test_existing_output_offers_resume(tmp_path: Path) -> None:
    launcher = ScriptedLauncher()
    cfg = load_config("tiny-cpu-demo")
    finished_run(cfg.output.dir)
    app = make_app(tmp_path, launcher=launcher)
    async with app.run_test(size=SIZE) as pilot:
        await open_training(pilot, "tiny-cpu-demo", cfg)
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
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=1) as (pilot, launcher):
        app = pilot.app
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
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=1) as (pilot, launcher):
        await pilot.press("ctrl+q")
    assert launcher.process.stopped.is_set() and not launcher.process.killed
    assert launcher.process.stop_calls == 1  # a second SIGINT would make the engine abort


@run_async
async def test_a_source_that_breaks_stops_the_engine_and_says_why(tmp_path: Path) -> None:
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=1) as (pilot, launcher):
        app = pilot.app
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
        await open_training(pilot, "tiny-cpu-demo")
        screen = app.screen
        await wait_until(pilot, lambda: "cannot start" in text_of(screen, "#run-error"))
        assert "./outputs/tiny-cpu-demo: cannot create the output directory" in text_of(
            screen, "#run-error")
        assert "not started" in text_of(screen, "#run-title")
        await pilot.press("escape")
        await wait_until(pilot, lambda: screen_name(app) == "HardwareScreen")


@run_async
async def test_stopping_status_holds_until_the_engine_ends(tmp_path: Path) -> None:
    slow_stop = ScriptedLauncher(gpus=1, finish_on_stop=False)
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=1,
                            launcher=slow_stop) as (pilot, launcher):
        app = pilot.app
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
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=None) as (pilot, launcher):
        app = pilot.app
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
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=2,
                            via_presets=True) as (pilot, launcher):
        app = pilot.app
        await finish_to_done(pilot, launcher)
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
        await open_training(pilot, "gpt-oss-20b-lora-1gpu")
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
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=None) as (pilot, launcher):
        app = pilot.app
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
        writer.emit("step", **step_event(1, 10, 0))  # read by the attach itself: shown at once
        await app.push_screen(TrainingScreen(cfg))
        screen = app.screen
        await wait_until(pilot, lambda: screen.session is not None and screen.running)
        await wait_until(pilot, lambda: screen.snapshot.step == 1, what="the live run's step")
        assert launcher.calls == [] and screen_name(app) == "TrainingScreen"
        writer.emit("run_end", status="completed", outputs={})
        held.release()
        await wait_until(pilot, lambda: not screen.running, what="the run's end")
        assert "completed (exit code 0)" in text_of(screen, "#run-title")
