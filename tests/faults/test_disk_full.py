"""A real small disk: the engine runs with its output folder on a size-limited tmpfs (mounted in a
user + mount namespace, `unshare -rm`), so the kernel itself answers ENOSPC. Skipped, with the
reason, where the machine cannot mount one. What the run left is copied out before the namespace
goes, then resumed on the ordinary disk: the loss curve matches an uninterrupted run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from osstune.engine.session.events import read_events
from osstune.engine.trainer import checkpoint as ckpt
from osstune.engine.trainer.train import EXIT_USER_ERROR
from tests.engine_fixtures import (
    REPO,
    engine_env,
    run_engine,
    step_losses,
    tiny_config,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]
MIB = 1 << 20
# The engine with the pre-save space check switched off: the write itself meets the full disk.
NO_PRECHECK = ("import sys; from osstune.engine.trainer import checkpointer, train; "
               "checkpointer.CheckpointManager._needed_and_free = lambda self, m, o: (0, 1); "
               "sys.exit(train.main(sys.argv[1:]))")
ENGINE = "import sys; from osstune.engine.trainer import train; sys.exit(train.main(sys.argv[1:]))"
SCRIPT = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 97; "$3" -c "$4" --config "$5" '
          '--output "$2" "${@:7}"; rc=$?; cp -a "$2/." "$6/"; exit $rc')


@cache
def _cannot_mount() -> str | None:
    if not shutil.which("unshare"):
        return "no unshare(1) on this machine"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1M tmpfs /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()[:200]}"
    return None


def _on_small_disk(tmp: Path, size_mib: int, cfg: Path, code: str, *extra: str
                   ) -> tuple[subprocess.CompletedProcess[str], Path]:
    reason = _cannot_mount()
    if reason:
        pytest.skip(reason)
    mount, saved = tmp / "disk", tmp / "left"
    mount.mkdir()
    saved.mkdir()
    # --force: the start-up pre-flight would refuse the small disk from its estimate; these
    # tests are about what happens when a save or the export meets it.
    proc = subprocess.run(["unshare", "-rm", "bash", "-c", SCRIPT, "bash", f"{size_mib}M",
                           str(mount), sys.executable, code, str(cfg), str(saved), "--force",
                           *extra],
                          cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode != 97, proc.stderr
    return proc, saved


def _assert_refused_cleanly(proc: subprocess.CompletedProcess[str], saved: Path) -> dict:
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    events = read_events(saved)
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "disk_full", error
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "failed"
    assert not [p for p in ckpt.checkpoints_root(saved).iterdir() if p.name.startswith(".")]
    for folder in ckpt.complete_checkpoints(saved):
        ckpt.read_trainer_state(folder)
    return error


def _resume_matches(tmp: Path, saved: Path, cfg: dict, baseline_steps: int) -> None:
    """Resume the copy on the ordinary disk; compare with an uninterrupted run."""
    resumed = tmp / "resumed"
    shutil.copytree(saved, resumed)
    path = write_config(tmp, {**cfg, "output": {**cfg["output"], "dir": str(resumed)}},
                        "resume.yaml")
    proc = run_engine(["--config", str(path), "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    base_cfg = {**cfg, "name": "base", "output": {**cfg["output"], "dir": str(tmp / "base")}}
    proc = run_engine(["--config", str(write_config(tmp, base_cfg))])
    assert proc.returncode == 0, proc.stderr[-3000:]
    base, got = step_losses(tmp / "base"), step_losses(resumed)
    assert len(base) == baseline_steps
    for step, loss in base.items():
        assert got[step] == pytest.approx(loss, abs=1e-5), step


def test_disk_too_small_for_the_first_save(tmp_path):
    cfg = tiny_config(tmp_path, training={"max_steps": 2})
    proc, saved = _on_small_disk(tmp_path, 100, write_config(tmp_path, cfg), ENGINE)
    error = _assert_refused_cleanly(proc, saved)
    assert "not enough free space" in error["message"]
    assert ckpt.complete_checkpoints(saved) == []


def test_disk_fills_at_the_third_save_then_resume_reproduces_the_curve(tmp_path):
    """Two ~155 MB checkpoints fit in 400 MiB, the third does not."""
    cfg = tiny_config(tmp_path, training={"max_steps": 6}, output={"save_steps": 2,
                                                                    "keep_last": 2})
    proc, saved = _on_small_disk(tmp_path, 400, write_config(tmp_path, cfg), ENGINE)
    _assert_refused_cleanly(proc, saved)
    assert [p.name for p in ckpt.complete_checkpoints(saved)] == ["step-000002", "step-000004"]
    _resume_matches(tmp_path, saved, cfg, 6)


def test_enospc_inside_the_shard_writer(tmp_path):
    """Without the pre-save check the kernel's ENOSPC reaches DCP's writer mid-save."""
    cfg = tiny_config(tmp_path, training={"max_steps": 4})
    proc, saved = _on_small_disk(tmp_path, 250, write_config(tmp_path, cfg), NO_PRECHECK)
    error = _assert_refused_cleanly(proc, saved)
    assert "No space left on device" in error["message"]
    assert [p.name for p in ckpt.complete_checkpoints(saved)] == ["step-000002"]
    _resume_matches(tmp_path, saved, cfg, 4)


def test_disk_fills_during_export(tmp_path):
    """The checkpoint fits, the export does not: a warning, and the run completes."""
    cfg = tiny_config(tmp_path, training={"max_steps": 2})
    proc, saved = _on_small_disk(tmp_path, 190, write_config(tmp_path, cfg), ENGINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(saved)
    assert any(e["type"] == "warning" and e["message"].startswith("export failed")
               for e in events), [e for e in events if e["type"] == "warning"]
    assert events[-1]["status"] == "completed"
    assert not (saved / "export").exists() and not (saved / ".export.partial").exists()
    assert [p.name for p in ckpt.complete_checkpoints(saved)] == ["step-000002"]
