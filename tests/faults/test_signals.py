"""Signals at random points and runs started together, through the real `osstune run`.

SIGTERM or SIGHUP to the CLI, or to the engine it started, at a step drawn at random (seeded per
case, so a failure replays): the engine finishes the step, checkpoints and ends `stopped`; then
`osstune run ... --resume` reproduces the uninterrupted loss curve (1e-5, CPU). Two `osstune run`
commands started together on one folder: one is refused (exit 2, one line naming the live run),
the other trains with its own settings. (tests/test_run_signals.py and tests/test_run_ownership.py
hold the rest: the wizard's quit, --detach/attach, a closed stderr, --resume/--force on a live run.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osstune.engine.plan.config import load_config
from osstune.engine.session.events import read_events
from osstune.engine.session.lock import owner_of
from tests.engine_fixtures import (
    REPO,
    engine_env,
    last_run_end,
    run_engine,
    step_losses,
    tiny_config,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]
STEPS = 6


def _config(tmp: Path, name: str) -> Path:
    return write_config(tmp, tiny_config(tmp, name, training={"max_steps": STEPS},
                                         output={"save_steps": 100, "export": False}))


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "osstune.tui.cli", "run", *args], cwd=REPO,
                            env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_step(out: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["type"] == "step" and e["step"] >= step for e in read_events(out)):
            return
        time.sleep(0.02)
    raise AssertionError(f"no step {step} in {out} within {timeout}s")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[int, float]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = run_engine(["--config", str(_config(tmp, "base"))], timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = step_losses(tmp / "base")
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


@pytest.mark.parametrize("target,signum", [("cli", signal.SIGTERM), ("cli", signal.SIGHUP),
                                           ("engine", signal.SIGTERM)])
def test_a_signal_at_a_random_step_then_resume_reproduces_the_curve(
        tmp_path, baseline, target, signum):
    at = random.Random(f"{target}-{signum.name}").randint(1, STEPS - 3)
    path = _config(tmp_path, "run")
    out = tmp_path / "run"
    cli = _cli(str(path), "--output", str(out))
    try:
        _wait_for_step(out, at)
        if target == "cli":
            if signum == signal.SIGHUP:  # the terminal is gone: nobody reads the CLI any more
                cli.stdout.close()
                cli.stderr.close()
            cli.send_signal(signum)
        else:
            os.kill(owner_of(out).pid, signum)
        cli.wait(timeout=300)
    finally:
        if cli.poll() is None:
            cli.kill()
    end = last_run_end(out)
    assert end["status"] == "stopped", (at, end)
    assert at <= end["step"] < STEPS, (at, end)
    assert (out / "checkpoints" / f"step-{end['step']:06d}" / "COMPLETE").is_file()
    assert cli.returncode == 1  # stopped: the CLI says how to resume
    assert owner_of(out) is None
    resumed = subprocess.run([sys.executable, "-m", "osstune.tui.cli", "run", str(path),
                              "--output", str(out), "--resume"], cwd=REPO, env=engine_env(),
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    losses = step_losses(out)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step, loss in baseline.items():
        assert losses[step] == pytest.approx(loss, abs=1e-5), (at, step)


def test_two_runs_started_together_one_refused_the_other_keeps_its_settings(tmp_path):
    path = write_config(tmp_path, tiny_config(tmp_path, "shared", training={"max_steps": 400},
                                              output={"save_steps": 1000, "export": False}))
    out = tmp_path / "shared"
    wanted = {300: None, 400: None}
    for steps in wanted:  # back to back: both pass their checks before either engine starts
        wanted[steps] = _cli(str(path), "--set", f"max_steps={steps}", "--output", str(out))
    try:
        refused = survivor = None
        deadline = time.monotonic() + 300
        while refused is None and time.monotonic() < deadline:
            refused = next((s for s, p in wanted.items() if p.poll() is not None), None)
            time.sleep(0.05)
        assert refused is not None, "neither run was refused"
        survivor = next(s for s in wanted if s != refused)
        _, err = wanted[refused].communicate(timeout=30)
        assert wanted[refused].returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "in use by a live run (pid " in lines[0], lines
        _wait_for_step(out, 1)
        start = next(e for e in read_events(out) if e["type"] == "run_start")
        assert start["total_steps"] == survivor  # the survivor trains with its own settings
        assert load_config(str(out / "config.yaml")).training.max_steps == survivor
        wanted[survivor].send_signal(signal.SIGINT)
        wanted[survivor].communicate(timeout=300)
    finally:
        for proc in wanted.values():
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert last_run_end(out)["status"] == "stopped"
    assert [e["type"] for e in read_events(out)].count("run_start") == 1
