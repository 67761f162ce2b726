"""The save protocol under faults: a save writes into a temp folder and renames; a failed save
(a full disk at the first save, at the n-th, on a re-save of an existing step) removes its temp
folder, keeps the previous checkpoint as the one resume loads, and ends the run with an `error`
event of kind `disk_full` (exit 2, no traceback); a failed export is a warning. kill -9 during a
save or while old checkpoints are deleted never leaves a folder that looks complete but is not.
Resuming after any of these reproduces the uninterrupted loss curve (1e-5, CPU)."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from osstune.engine.plan import preflight, units
from osstune.engine.session.events import read_events
from osstune.engine.trainer import checkpoint as ckpt
from osstune.engine.trainer import checkpointer
from osstune.engine.trainer.train import EXIT_USER_ERROR, main
from tests.engine_fixtures import REPO, engine_env, step_losses, tiny_config, write_config
from tests.faults.ckpt_fixtures import trained, trainer_state

pytestmark = pytest.mark.faults
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


# ----------------------------------------------------------------------------- protocol units


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_save_writes_into_a_temp_folder_and_renames(tmp_path, monkeypatch):
    model, opt = trained()
    first = ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(2), 2, lora=False)
    before = _bytes(first)
    seen = []
    real_save = ckpt.dcp.save

    def spy(state, checkpoint_id):
        seen.append(Path(checkpoint_id))
        assert _bytes(first) == before, "the existing step-N was touched before the rename"
        return real_save(state, checkpoint_id=checkpoint_id)

    monkeypatch.setattr(ckpt.dcp, "save", spy)
    model2, opt2 = trained(seed=1)
    again = ckpt.save_checkpoint(tmp_path, model2, opt2, trainer_state(2), 2, lora=False)
    assert again == first
    assert seen == [first.with_name(".tmp-step-000002")]
    assert _bytes(first) != before  # replaced by the re-save, once it was complete
    assert sorted(p.name for p in ckpt.checkpoints_root(tmp_path).iterdir()) == ["step-000002"]


@pytest.mark.parametrize("where", ["shards", "rng", "state"])
def test_a_failed_resave_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    """After a resume, the same step is saved again: a failure midway must not cost the only
    checkpoint (a save that removed step-N first, or wrote into it, fails here)."""
    model, opt = trained()
    first = ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(2), 2, lora=False)
    before = _bytes(first)
    if where == "shards":
        real_save = ckpt.dcp.save

        def failing(state, checkpoint_id):
            real_save(state, checkpoint_id=checkpoint_id)  # shards written, then the disk fills
            raise ENOSPC
        monkeypatch.setattr(ckpt.dcp, "save", failing)
    elif where == "rng":
        monkeypatch.setattr(ckpt.torch, "save", lambda *a, **k: (_ for _ in ()).throw(ENOSPC))
    else:
        real_write = Path.write_text

        def write_text(self, *a, **k):
            if self.name == ckpt.STATE_FILE:
                raise ENOSPC
            return real_write(self, *a, **k)
        monkeypatch.setattr(Path, "write_text", write_text)
    model2, opt2 = trained(seed=1)
    with pytest.raises(ckpt.CheckpointSaveError, match="No space left") as info:
        ckpt.save_checkpoint(tmp_path, model2, opt2, trainer_state(2), 2, lora=False)
    assert info.value.disk_full
    monkeypatch.undo()
    assert _bytes(first) == before
    assert [p.name for p in ckpt.checkpoints_root(tmp_path).iterdir()] == ["step-000002"]
    assert ckpt.latest_checkpoint(tmp_path) == first
    fresh, fresh_opt = trained(seed=2)
    ckpt.load_checkpoint(first, fresh, fresh_opt, lora=False)
    torch.testing.assert_close(fresh.weight, model.weight)


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    model, opt = trained()
    monkeypatch.setattr(ckpt.torch, "save", lambda *a, **k: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(ckpt.CheckpointSaveError, match="Permission denied") as info:
        ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(1), 2, lora=False)
    assert not info.value.disk_full
    assert list(ckpt.checkpoints_root(tmp_path).iterdir()) == []


def test_old_checkpoints_lose_complete_before_their_shards(tmp_path, monkeypatch):
    model, opt = trained()
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(step), 2, lora=False)
    order = []
    real_unlink, real_rmtree = Path.unlink, shutil.rmtree
    monkeypatch.setattr(Path, "unlink", lambda self, *a, **k: (
        order.append(("unlink", self.name)), real_unlink(self, *a, **k))[1])
    monkeypatch.setattr(ckpt.shutil, "rmtree", lambda p, *a, **k: (
        order.append(("rmtree", Path(p).name)), real_rmtree(p, *a, **k))[1])
    ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(3), 2, lora=False)
    first = order.index(("unlink", ckpt.COMPLETE))
    assert order.index(("rmtree", "step-000001")) > first
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step-000002", "step-000003"]


def test_leftovers_of_killed_saves_and_deletions_go_at_the_next_save(tmp_path):
    model, opt = trained()
    root = ckpt.checkpoints_root(tmp_path)
    for name in (".tmp-step-000005", "step-000001", ".old-step-000002"):
        (root / name).mkdir(parents=True)
        (root / name / "__0_0.distcp").write_bytes(b"x")
    ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(3), 2, lora=False)
    assert sorted(p.name for p in root.iterdir()) == ["step-000003"]


def test_save_space_names_needed_and_free_bytes(tmp_path):
    free, problem = preflight.save_space(tmp_path, 1)
    assert free > 0 and problem is None
    free, problem = preflight.save_space(tmp_path, 1 << 60)
    assert problem == (f"disk: the checkpoint needs ~1048576.0 TiB ({1 << 60:,} bytes), "
                       f"{units.fmt_bytes(free)} free at {tmp_path}")



# ----------------------------------------------------------------------------- kill -9


KILLER = textwrap.dedent('''
    import os, shutil, signal, sys
    from pathlib import Path
    import torch
    from osstune.engine.trainer import checkpoint as ckpt

    out, phase = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()

    def state(step):
        return ckpt.TrainerState(step=step, total_steps=9, world_size=1, method="full",
                                 elapsed_s=1.0, scheduler={})

    for step in (1, 2):
        ckpt.save_checkpoint(out, model, opt, state(step), 2, lora=False)
    if phase == "delete":
        real_rmtree = shutil.rmtree
        def rmtree(path, *a, **k):
            if Path(path).name == "step-000001":
                shard = next(Path(path).glob("*.distcp"))
                shard.unlink()  # one shard gone, then the power cord
                os.kill(os.getpid(), signal.SIGKILL)
            return real_rmtree(path, *a, **k)
        ckpt.shutil.rmtree = rmtree
    else:
        real_save = ckpt.dcp.save
        def save(state_dict, checkpoint_id):
            real_save(state_dict, checkpoint_id=checkpoint_id)
            os.kill(os.getpid(), signal.SIGKILL)
        ckpt.dcp.save = save
    ckpt.save_checkpoint(out, model, opt, state(3), 2, lora=False)
''')


@pytest.mark.parametrize("phase", ["save", "delete"])
def test_kill_9_never_leaves_a_complete_looking_folder_missing_a_shard(tmp_path, phase):
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path), phase], cwd=REPO,
                          env=engine_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    done = ckpt.complete_checkpoints(tmp_path)
    assert done, "the previous checkpoints must survive"
    for folder in done:
        ckpt.read_trainer_state(folder)  # every shard present and whole
    # A kill during the save keeps 1 and 2; during the deletion of 1, step 3 is already in place.
    expected = ["step-000001", "step-000002"] if phase == "save" else \
        ["step-000002", "step-000003"]
    assert [p.name for p in done] == expected
    leftover = ".tmp-step-000003" if phase == "save" else "step-000001"
    assert (ckpt.checkpoints_root(tmp_path) / leftover).is_dir()
    # The next save cleans up what the kill left.
    model, opt = trained()
    ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(4), 2, lora=False)
    assert sorted(p.name for p in ckpt.checkpoints_root(tmp_path).iterdir()) == \
        [expected[-1], "step-000004"]


# ----------------------------------------------------------------------------- engine runs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The uninterrupted curve: 4 steps, checkpoints at 2 and 4."""
    tmp = tmp_path_factory.mktemp("baseline")
    path = write_config(tmp, tiny_config(tmp, "base"))
    assert main(["--config", str(path)]) == 0
    return step_losses(tmp / "base")


def _fail_at_save(monkeypatch, n: int) -> None:
    real_save, calls = ckpt.dcp.save, []

    def save(state, checkpoint_id):
        calls.append(checkpoint_id)
        real_save(state, checkpoint_id=checkpoint_id)
        if len(calls) == n:
            raise ENOSPC
    monkeypatch.setattr(ckpt.dcp, "save", save)


def _assert_disk_full(out: Path, err: str, code: int) -> dict:
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("osstune: error:")]) == 1
    events = read_events(out)
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "disk_full"
    assert "bytes" in error["hint"] and " free at " in error["hint"]
    assert "osstune run" in error["hint"] and "--resume" in error["hint"]
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "failed"
    root = ckpt.checkpoints_root(out)
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "temp folder left"
    return error


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_disk_full_at_the_nth_save_then_resume_reproduces_the_curve(
        tmp_path, monkeypatch, capsys, baseline, n):
    path = write_config(tmp_path, tiny_config(tmp_path))
    out = tmp_path / "tiny"
    _fail_at_save(monkeypatch, n)
    code = main(["--config", str(path)])
    _assert_disk_full(out, capsys.readouterr().err, code)
    monkeypatch.undo()
    saved = [p.name for p in ckpt.complete_checkpoints(out)]
    assert saved == ([] if n == 1 else ["step-000002"])
    again = ["--resume"] if saved else ["--force"]
    assert main(["--config", str(path), *again]) == 0, capsys.readouterr().err
    losses = step_losses(out)
    for step, loss in baseline.items():
        assert losses[step] == pytest.approx(loss, abs=1e-5), step


@pytest.mark.slow
def test_too_little_space_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, capsys):
    # Only the check before a save sees the small disk (the start-up pre-flight has its own).
    monkeypatch.setattr(checkpointer, "save_space", lambda folder, needed: (
        1000, None if needed <= 1000 else f"disk: needs ~{needed} bytes, 1000 free"))
    path = write_config(tmp_path, tiny_config(tmp_path, training={"max_steps": 2}))
    out = tmp_path / "tiny"
    code = main(["--config", str(path)])
    error = _assert_disk_full(out, capsys.readouterr().err, code)
    assert "1000 free at" in error["hint"]
    assert list(ckpt.checkpoints_root(out).iterdir()) == []


@pytest.mark.slow
def test_a_failed_export_is_a_warning_and_the_run_completes(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def full(*a, **k):  # what safetensors raises on ENOSPC: a bare Exception
        raise Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                        "message: \"No space left on device\" })")
    monkeypatch.setattr(huggingface_hub, "save_torch_state_dict", full)
    path = write_config(tmp_path, tiny_config(tmp_path, training={"max_steps": 2}))
    out = tmp_path / "tiny"
    assert main(["--config", str(path)]) == 0, capsys.readouterr().err
    events = read_events(out)
    warning = [e["message"] for e in events if e["type"] == "warning"]
    assert any(w.startswith("export failed: ") and "No space left" in w
               and "merge-sharded-fsdp-weights" in w for w in warning)
    assert events[-1]["status"] == "completed" and "export" not in events[-1]["outputs"]
    assert not (out / "export").exists() and not (out / ".export.partial").exists()


@pytest.mark.slow
def test_merge_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from osstune.engine.trainer import merge

    monkeypatch.setattr(huggingface_hub, "save_torch_state_dict",
                        lambda *a, **k: (_ for _ in ()).throw(Exception(
                            "Error while serializing: IoError(Os { code: 28 })\nsecond line")))
    path = write_config(tmp_path, tiny_config(tmp_path, training={"max_steps": 2}))
    out = tmp_path / "tiny"  # the export fails too (a warning); the checkpoint is there
    assert main(["--config", str(path)]) == 0
    capsys.readouterr()
    code = merge.main(["sharded", str(path), str(out)])
    err = capsys.readouterr().err
    assert code == 2  # a full disk: the user's to fix, as for a run
    assert err.count("\n") == 1 and err.startswith("osstune: error: cannot write ")
    assert "Traceback" not in err
    assert not (out / "merged").exists() and not (out / ".merged.partial").exists()


ENGINE_KILLER = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    from osstune.engine.trainer import checkpoint as ckpt, train

    phase, n, calls = sys.argv[1], int(sys.argv[2]), []
    if phase == "save":
        real_save = ckpt.dcp.save
        def save(state_dict, checkpoint_id):
            calls.append(checkpoint_id)
            real_save(state_dict, checkpoint_id=checkpoint_id)
            if len(calls) == n:  # shards on disk, nothing renamed yet
                os.kill(os.getpid(), signal.SIGKILL)
        ckpt.dcp.save = save
    else:
        real_rmtree = ckpt.shutil.rmtree
        def rmtree(path, *a, **k):
            if Path(path).name.startswith("step-"):  # an old checkpoint being deleted
                next(Path(path).glob("*.distcp")).unlink()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_rmtree(path, *a, **k)
        ckpt.shutil.rmtree = rmtree
    sys.exit(train.main(sys.argv[3:]))
''')


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["save", "delete"])
def test_engine_killed_during_a_save_or_deletion_resumes_the_same_curve(
        tmp_path, baseline, phase):
    cfg = tiny_config(tmp_path, output={"save_steps": 1, "keep_last": 1})
    path = write_config(tmp_path, cfg)
    out = tmp_path / "tiny"
    proc = subprocess.run([sys.executable, "-c", ENGINE_KILLER, phase, "2", "--config",
                           str(path)], cwd=REPO, env=engine_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    done = ckpt.complete_checkpoints(out)
    for folder in done:
        ckpt.read_trainer_state(folder)  # complete-looking means complete
    assert [p.name for p in done] == ["step-000001" if phase == "save" else "step-000002"]
    resumed = subprocess.run([sys.executable, "-m", "osstune.engine.trainer.train", "--config",
                              str(path), "--resume"], cwd=REPO, env=engine_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    losses = step_losses(out)
    for step, loss in baseline.items():
        assert losses[step] == pytest.approx(loss, abs=1e-5), step
    assert sorted(p.name for p in ckpt.checkpoints_root(out).iterdir()) == ["step-000004"]
