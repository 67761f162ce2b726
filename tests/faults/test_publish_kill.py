"""kill -9 at every point of a save's publication (engine/trainer/checkpoint.py `_publish`).

Re-saving an existing step (after a resume) moves `step-N` aside to `.old-step-N`, renames the
finished `.tmp-step-N` onto `step-N`, then deletes the old copy. A kill between those two renames
used to leave the step only under dot-names, so resume skipped it (or found nothing). Now the
next listing puts the finished copy back under the step's name: at every kill point resume finds
`step-N`, whole (the one in place, else the new finished copy); the next save removes what is
left over.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from osstune.engine.trainer import checkpoint as ckpt
from tests.engine_fixtures import REPO, engine_env
from tests.faults.ckpt_fixtures import trained, trainer_state

pytestmark = pytest.mark.faults

KILLER = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    import torch
    from osstune.engine.trainer import checkpoint as ckpt
    from tests.faults.ckpt_fixtures import trained, trainer_state, trainer_state as state

    out, point = Path(sys.argv[1]), sys.argv[2]

    old, old_opt = trained(0)
    for step in (1, 2):
        ckpt.save_checkpoint(out, old, old_opt, state(step), 3, lora=False)
    new, new_opt = trained(1)
    torch.save(old.state_dict(), out / "old.pt")
    torch.save(new.state_dict(), out / "new.pt")

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    renames, real_rename = [], Path.rename
    def rename(self, target):
        if self.parent.name != ckpt.CHECKPOINTS_DIR:  # DCP renames its own files too
            return real_rename(self, target)
        renames.append(self.name)
        if point == f"before-rename-{len(renames)}":
            die()
        moved = real_rename(self, target)
        if point == f"after-rename-{len(renames)}":
            die()
        return moved
    Path.rename = rename
    real_rmtree = ckpt.shutil.rmtree
    def rmtree(path, *a, **k):
        if point == "removing-old" and Path(path).name.startswith(".old-"):
            die()  # COMPLETE of the old copy already gone
        return real_rmtree(path, *a, **k)
    ckpt.shutil.rmtree = rmtree
    ckpt.save_checkpoint(out, new, new_opt, state(2), 3, lora=False)
''')

# rename 1: step-N -> .old-step-N; rename 2: .tmp-step-N -> step-N; then .old-step-N goes.
# point -> (the folders the kill leaves, which save resume loads: the step-N still in place, else
# the new finished copy)
POINTS = {"before-rename-1": ([".tmp-step-000002", "step-000001", "step-000002"], "old"),
          "after-rename-1": ([".old-step-000002", ".tmp-step-000002", "step-000001"], "new"),
          "after-rename-2": ([".old-step-000002", "step-000001", "step-000002"], "new"),
          "removing-old": ([".old-step-000002", "step-000001", "step-000002"], "new")}


@pytest.mark.parametrize("point", list(POINTS))
def test_a_kill_while_publishing_a_resave_leaves_the_step_resumable(tmp_path, point):
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path), point], cwd=REPO,
                          env=engine_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    root = ckpt.checkpoints_root(tmp_path)
    left, loaded = POINTS[point]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == left  # what the kill left

    ckpt.latest_checkpoint(tmp_path)  # a read (merge, run_folder): it renames nothing
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == left
    ckpt.recover_interrupted_publish(tmp_path)  # the engine's `--resume`, holding the lock
    latest = ckpt.latest_checkpoint(tmp_path)  # what `--resume` loads
    assert latest == root / "step-000002"
    assert ckpt.read_trainer_state(latest).step == 2
    model, opt = trained(2)  # a different start: the load must overwrite it
    ckpt.load_checkpoint(latest, model, opt, lora=False)
    expected = torch.load(tmp_path / f"{loaded}.pt", weights_only=True)
    torch.testing.assert_close(model.state_dict(), expected)

    ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(3), 3, lora=False)
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002",
                                                       "step-000003"]


def test_only_the_old_copy_left_is_put_back(tmp_path):
    """A re-save whose new copy never got COMPLETE (killed while writing) and whose old copy was
    already moved aside cannot happen in `_publish`, but a half-copied folder must never win:
    an unfinished `.tmp-step-N` stays a leftover and the finished `.old-step-N` is the step."""
    root = ckpt.checkpoints_root(tmp_path)
    model, opt = trained()
    step = ckpt.save_checkpoint(tmp_path, model, opt, trainer_state(2), 3, lora=False)
    step.rename(root / ".old-step-000002")
    (root / ".tmp-step-000002").mkdir()
    (root / ".tmp-step-000002" / "__0_0.distcp").write_bytes(b"half")
    assert ckpt.recover_interrupted_publish(tmp_path) == [step]
    assert ckpt.latest_checkpoint(tmp_path) == step
    assert (step / ckpt.COMPLETE).is_file()
    assert sorted(p.name for p in root.iterdir()) == [".tmp-step-000002", "step-000002"]
    assert ckpt.recover_interrupted_publish(tmp_path) == []  # nothing left to repair


@pytest.mark.parametrize("left", [".tmp-step-000004", ".old-step-000004"])
def test_merge_names_a_newer_checkpoint_left_mid_publish(tmp_path, left):
    """A kill between a finished save and its rename: merging the older step in its place would
    lose the newest weights silently, and renaming here could race a live run: the merge says
    so."""
    from osstune.engine.trainer.merge import MergeError, _newest_checkpoint

    root = ckpt.checkpoints_root(tmp_path)
    for name in ("step-000002", left):
        (root / name).mkdir(parents=True)
        (root / name / "COMPLETE").write_text("ok")
    with pytest.raises(MergeError, match=rf"{left}: a newer finished checkpoint .* --resume"):
        _newest_checkpoint(tmp_path)
    (root / "step-000006").mkdir()
    (root / "step-000006" / "COMPLETE").write_text("ok")  # newer than what was left: used
    assert _newest_checkpoint(tmp_path) == root / "step-000006"
