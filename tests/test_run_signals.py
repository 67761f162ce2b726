"""Runs survive their front-end, with real signals on the tiny CPU model: SIGTERM or SIGHUP to
`osstune run` stops the engine as Ctrl-C does (step finished, checkpoint, status stopped), also
when the terminal is gone; the engine writes its log to a file, never to a pipe that can close;
quitting the wizard sends the stop once and the engine stops gracefully."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from term_fixtures import Screen, read_until, spawn_on_pty
from tui_fixtures import cpu_profile, run_async, wait_until

from osstune.engine.plan.config import load_config
from osstune.engine.session.events import read_events
from osstune.engine.session.launch import ENGINE_LOG
from osstune.engine.session.lock import owner_of
from osstune.engine.session.run_session import EngineLauncher
from osstune.tui.app import OsstuneApp
from osstune.tui.screens.training import TrainingScreen
from tests.engine_fixtures import REPO, engine_env, last_run_end, wait_for_event

pytestmark = pytest.mark.slow

LONG = ["max_steps=400", "sequence_len=128", "save_steps=1000", "training.logging_steps=1",
        "gradient_accumulation_steps=1", "micro_batch_size=1"]


def _start_detached(out: Path) -> subprocess.CompletedProcess[str]:
    """`osstune run --detach` of a long tiny run into `out`; it returns once the engine owns it."""
    sets = [a for o in LONG for a in ("--set", o)]
    started = subprocess.run(
        [sys.executable, "-m", "osstune.tui.cli", "run", "tiny-cpu-demo", *sets, "--output",
         str(out), "--detach"], cwd=REPO, env=engine_env(), capture_output=True, text=True,
        timeout=120)
    assert started.returncode == 0, started.stderr
    return started


@contextlib.asynccontextmanager
async def _wizard_training(tmp_path: Path, monkeypatch, out: Path):  # noqa: ANN001, ANN202
    """The wizard (real EngineLauncher) on the Training screen of the long tiny run in `out`."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny-cpu-demo", [*LONG, f"output.dir={out}"])
    profile = cpu_profile()
    app = OsstuneApp(lambda: profile, EngineLauncher(), tmp_path / "wizard.json")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        await app.push_screen(TrainingScreen(cfg))
        yield pilot, app.screen


def _stop_detached(out: Path, holder) -> None:  # noqa: ANN001
    """Ctrl-C to the detached engine that holds `out`, then wait until it has let go."""
    if owner_of(out) is not None:
        os.kill(holder.pid, signal.SIGINT)
    deadline = time.monotonic() + 240
    while owner_of(out) is not None and time.monotonic() < deadline:
        time.sleep(0.2)


def _start_cli(out: Path) -> subprocess.Popen[bytes]:
    sets = [a for o in LONG for a in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, "-m", "osstune.tui.cli", "run", "tiny-cpu-demo", *sets, "--output",
         str(out)], cwd=REPO, env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _assert_stopped_with_a_checkpoint(out: Path) -> None:
    end = last_run_end(out)
    assert end["status"] == "stopped", end
    assert 1 <= end["step"] < 400
    assert (out / "checkpoints" / f"step-{end['step']:06d}" / "COMPLETE").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_cli_stops_the_engine_gracefully(tmp_path: Path, signum) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    cli = _start_cli(out)
    try:
        wait_for_event(out, "step")
        if signum == signal.SIGHUP:  # the terminal went away: nobody reads the CLI's output
            cli.stdout.close()
            cli.stderr.close()
        cli.send_signal(signum)
        cli.wait(timeout=240)
    finally:
        if cli.poll() is None:
            cli.kill()
    _assert_stopped_with_a_checkpoint(out)
    assert "SIGINT: stopping after this step" in (out / ENGINE_LOG).read_text()
    assert owner_of(out) is None
    if signum == signal.SIGTERM:
        assert cli.returncode == 1  # stopped, not completed: the CLI says how to resume


@run_async
async def test_quitting_the_wizard_stops_the_real_engine_once(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    async with _wizard_training(tmp_path, monkeypatch, tmp_path / "wiz") as (pilot, screen):
        await wait_until(pilot, lambda: screen.snapshot.step >= 1, timeout=180,
                         what="the first step")
        process = screen.session.process
        await pilot.press("ctrl+q")
    assert process.wait(timeout=240) == 0
    _assert_stopped_with_a_checkpoint(tmp_path / "wiz")
    log = (tmp_path / "wiz" / ENGINE_LOG).read_text()
    assert log.count("SIGINT: stopping after this step") == 1, log


def test_detach_then_attach_and_stop(tmp_path: Path) -> None:
    out = tmp_path / "bg"
    started = _start_detached(out)
    assert f"osstune attach {out}" in started.stdout
    holder = owner_of(out)
    try:
        assert holder is not None  # the engine owns the folder; the CLI is gone
        wait_for_event(out, "step")
        watcher = subprocess.Popen(
            [sys.executable, "-m", "osstune.tui.cli", "attach", str(out)], cwd=REPO,
            env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = [watcher.stdout.readline() for _ in range(2)]  # its header, then a new step
        assert seen[0].startswith(f"osstune attach {out}: following") and \
            seen[1].startswith("step "), seen
        watcher.send_signal(signal.SIGINT)  # Ctrl-C in the attached terminal
        stdout, stderr = watcher.communicate(timeout=240)
    finally:
        if owner_of(out) is not None:
            os.kill(owner_of(out).pid, signal.SIGKILL)
    assert watcher.returncode == 1, stderr
    assert "run stopped at step" in stderr and "--resume" in stderr
    assert stdout.splitlines()[-1].startswith("run_end: stopped"), stdout
    _assert_stopped_with_a_checkpoint(out)
    again = subprocess.run([sys.executable, "-m", "osstune.tui.cli", "attach", str(out)],
                           cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "no live run" in again.stderr


def test_the_engine_survives_a_closed_stderr(tmp_path: Path) -> None:
    """Run directly with its stderr on a pipe nobody reads any more: it still completes."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg = load_config("tiny-cpu-demo", ["max_steps=2", "sequence_len=128", "save_steps=1000",
                                        "training.logging_steps=1", "output.export=false"])
    from osstune.engine.plan.config import dump_config

    cfg_path.write_text(dump_config(cfg))
    engine = subprocess.Popen(
        [sys.executable, "-m", "osstune.engine.trainer.train", "--config", str(cfg_path),
         "--output", str(tmp_path / "out")], cwd=REPO, env=engine_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    engine.stderr.close()  # EPIPE on every write from now on
    assert engine.wait(timeout=240) == 0
    assert last_run_end(tmp_path / "out")["status"] == "completed"


def test_ctrl_c_under_the_live_panel_leaves_one_clean_panel(tmp_path: Path) -> None:
    """On a real terminal: the first Ctrl-C is said by the panel itself, and the finished panel
    is drawn once, with nothing left above it and no Ctrl-C hint once the run is over."""
    out = tmp_path / "run"
    env = {**engine_env(), "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    env.pop("NO_COLOR", None)
    sets = [a for o in LONG for a in ("--set", o)]
    pid, fd = spawn_on_pty([sys.executable, "-m", "osstune.tui.cli", "run", "tiny-cpu-demo",
                            *sets, "--output", str(out)], env, str(REPO), columns=100, rows=30)
    seen = bytearray()
    try:
        events = out / "events.jsonl"
        assert read_until(fd, seen, lambda: events.is_file() and '"step"' in events.read_text(),
                          180)
        time.sleep(0.5)  # a frame or two with the step on screen
        os.write(fd, b"\x03")  # Ctrl-C, typed on the terminal
        read_until(fd, seen, lambda: False, 240)  # until the program ends and the pty closes
    finally:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(fd)
    _assert_stopped_with_a_checkpoint(out)
    screen = Screen(columns=100, rows=30)
    screen.feed(bytes(seen))
    lines = screen.text()
    assert screen.earlier_lines_kept(), lines
    assert sum(line.startswith("╭") for line in lines) == 1, "\n".join(lines)
    assert sum(line.startswith("╰") for line in lines) == 1, "\n".join(lines)
    assert sum(line.startswith("│ status") for line in lines) == 1, "\n".join(lines)
    assert any("status    stopped" in line for line in lines)
    assert not any("Ctrl-C" in line or "^C" in line for line in lines), "\n".join(lines)
    assert "run stopped at step" in "\n".join(lines)  # the report, after the panel


@run_async
async def test_the_wizard_follows_a_detached_run_and_leaves_it_running(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A run started with --detach: the wizard's Training screen for its folder attaches to it
    (no second engine); quitting the wizard leaves the run going, as `attach` without Ctrl-C."""
    out = tmp_path / "bg"
    _start_detached(out)
    holder = owner_of(out)
    assert holder is not None
    try:
        async with _wizard_training(tmp_path, monkeypatch, out) as (pilot, screen):
            await wait_until(pilot, lambda: screen.attached and screen.snapshot.step >= 1,
                             timeout=180, what="a step of the live run")
            await pilot.press("ctrl+q")
        time.sleep(1.0)
        assert owner_of(out) == holder  # the same engine, still running: nobody stopped it
        assert "SIGINT" not in (out / ENGINE_LOG).read_text()
        assert [e["type"] for e in read_events(out)].count("run_start") == 1
    finally:
        _stop_detached(out, holder)
    _assert_stopped_with_a_checkpoint(out)


def test_a_closed_attach_terminal_leaves_the_detached_run_running(tmp_path: Path) -> None:
    """`attach` then SIGTERM, or its terminal closed (SIGHUP): attach leaves (exit 0, saying
    so); the detached run goes on - it must not depend on the SSH session that watched it."""
    out = tmp_path / "bg"
    _start_detached(out)
    holder = owner_of(out)
    assert holder is not None
    try:
        wait_for_event(out, "step")
        for signum in (signal.SIGTERM, signal.SIGHUP):
            watcher = subprocess.Popen(
                [sys.executable, "-m", "osstune.tui.cli", "attach", str(out)], cwd=REPO,
                env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            seen = [watcher.stdout.readline() for _ in range(2)]  # its header, then a step
            assert seen[0].startswith(f"osstune attach {out}: following") and \
                seen[1].startswith("step "), seen
            if signum == signal.SIGHUP:  # the terminal is gone
                watcher.stdout.close()
                watcher.send_signal(signum)
                assert watcher.wait(timeout=60) == 0
                watcher.stderr.close()
            else:
                watcher.send_signal(signum)
                _, stderr = watcher.communicate(timeout=60)
                assert watcher.returncode == 0, stderr
                assert f"the run goes on (osstune attach {out})" in stderr
            assert owner_of(out) == holder, signum.name  # the same engine, still running
        assert "SIGINT" not in (out / ENGINE_LOG).read_text()
    finally:
        _stop_detached(out, holder)
    _assert_stopped_with_a_checkpoint(out)
