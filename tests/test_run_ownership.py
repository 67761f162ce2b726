"""One owner per output folder (engine/session/lock.py), tried with real concurrent processes:
a second run, --resume or --force against a live run is refused naming it (exit 2) and changes
nothing; the lock lives as long as the engine, not its front-end; a dead owner's lock is taken
over with a warning."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osstune.engine.plan.config import load_config
from osstune.engine.session.lock import LOCK_FILE, OutputLock, RunLocked, owner_of
from tests.engine_fixtures import REPO, engine_env, last_run_end, wait_for_event

LONG = ["max_steps=400", "sequence_len=128", "save_steps=1000", "training.logging_steps=1",
        "gradient_accumulation_steps=1", "micro_batch_size=1"]


def _cli(*args: str, **kw) -> subprocess.Popen[str]:  # noqa: ANN003
    return subprocess.Popen([sys.executable, "-m", "osstune.tui.cli", *args], cwd=REPO,
                            env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_a_held_lock_names_its_owner(tmp_path: Path) -> None:
    held = OutputLock.acquire(tmp_path)
    with pytest.raises(RunLocked) as refused:
        OutputLock.acquire(tmp_path)
    message = str(refused.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}, started " in message
    assert owner_of(tmp_path) == held.owner
    held.release()
    assert owner_of(tmp_path) is None
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released cleanly: nothing stale left


def test_a_dead_owner_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "started": time.time() - 60, "token": "x"}))
    lock = OutputLock.acquire(tmp_path)
    warning = lock.stale_warning()
    assert warning is not None and f"pid {pid}" in warning and "took over" in warning
    lock.release()


@pytest.mark.slow
def test_second_run_resume_and_force_are_refused_while_a_run_is_live(tmp_path: Path) -> None:
    out = tmp_path / "live"
    first = _cli("run", "tiny-cpu-demo", *_sets(LONG), "--output", str(out))
    try:
        wait_for_event(out, "step")
        config_before = (out / "config.yaml").read_bytes()
        events_before = (out / "events.jsonl").stat().st_size
        for extra in ([], ["--resume"], ["--force"]):
            second = subprocess.run(
                [sys.executable, "-m", "osstune.tui.cli", "run", "tiny-cpu-demo", "--set",
                 "max_steps=3", "--output", str(out), *extra],
                cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, (extra, second.stderr)
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "in use by a live run (pid " in lines[0], lines
            assert (out / "config.yaml").read_bytes() == config_before  # its own settings stay
            assert (out / "events.jsonl").stat().st_size >= events_before  # nothing deleted
        engine_pid = owner_of(out).pid
        assert engine_pid != first.pid  # the engine records itself as the owner
        first.send_signal(signal.SIGINT)  # Ctrl-C: the engine checkpoints and stops
        first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    end = last_run_end(out)
    assert end["status"] == "stopped"
    assert load_config(str(out / "config.yaml")).training.max_steps == 400
    assert owner_of(out) is None


@pytest.mark.slow
def test_the_engine_keeps_the_folder_when_its_front_end_dies(tmp_path: Path) -> None:
    out = tmp_path / "orphan"
    front = _cli("run", "tiny-cpu-demo", *_sets(LONG), "--output", str(out))
    wait_for_event(out, "step")
    front.kill()  # kill -9: no chance to hand anything over
    front.communicate(timeout=30)
    holder = owner_of(out)
    assert holder is not None  # the engine's inherited copy of the lock
    direct = subprocess.run(
        [sys.executable, "-m", "osstune.engine.trainer.train", "--config",
         str(out / "config.yaml"), "--output", str(out), "--force"],
        cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=120)
    assert direct.returncode == 2 and "in use by a live run" in direct.stderr
    assert (out / "events.jsonl").is_file()  # --force deleted nothing of the live run
    os.kill(holder.pid, signal.SIGINT)  # the engine still stops gracefully
    deadline = time.monotonic() + 240
    while owner_of(out) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert owner_of(out) is None
    assert last_run_end(out)["status"] == "stopped"


CLAIM = ("import sys; from osstune.engine.session.lock import claim_for_engine, RunLocked\n"
         "try:\n    lock = claim_for_engine(sys.argv[1])\nexcept RunLocked as e:\n"
         "    print('refused:', e); sys.exit(2)\nprint('owner', lock.owner.pid)\n")


def test_a_launched_engine_recognises_its_launchers_lock(tmp_path: Path) -> None:
    """torchrun's workers do not inherit the lock's file: they find their launcher's token."""
    held = OutputLock.acquire(tmp_path)
    env = {**engine_env(), "OSSTUNE_LOCK_TOKEN": held.owner.token}
    ours = subprocess.run([sys.executable, "-c", CLAIM, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert ours.returncode == 0 and ours.stdout.startswith("owner "), ours.stdout + ours.stderr
    env["OSSTUNE_LOCK_TOKEN"] = "someone-else"
    other = subprocess.run([sys.executable, "-c", CLAIM, str(tmp_path)], env=env,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "in use by a live run" in other.stdout
    held.release()
