"""No code from checkpoints: crafted DCP metadata and crafted non-tensor entries are refused
before any object is built, on `--resume` and in the merge; a refusal is an `error` event whose
hint is a command the CLI accepts. `trust_remote_code: true` is warned about."""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex

import pytest
import torch
from typer.testing import CliRunner

from osstune.engine.session.events import read_events
from osstune.engine.trainer import checkpoint as ckpt
from osstune.engine.trainer.safe_metadata import UnsafeMetadataError, load_metadata
from osstune.engine.trainer.train import EXIT_USER_ERROR, main
from tests.engine_fixtures import tiny_config, write_config

pytestmark = pytest.mark.faults


class _Payload:
    """Pickles to `callable(*args)`: what an attacker puts into a shared checkpoint."""

    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _tiny_checkpoint(folder, step: int = 2):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = ckpt.TrainerState(step=step, total_steps=4, world_size=1, method="full",
                              elapsed_s=1.0, scheduler={})
    return ckpt.save_checkpoint(folder, model, opt, state, keep_last=2, lora=False), model, opt


def _marker_payloads(marker):
    touch = f"touch {shlex.quote(str(marker))}"
    return {
        "os.system": _Payload(os.system, touch),
        "eval": _Payload(eval, f"open({str(marker)!r}, 'w')"),
        "exec": _Payload(exec, f"open({str(marker)!r}, 'w')"),
        "subprocess": _Payload(__import__("subprocess").call, ["touch", str(marker)]),
        "builtins.open": _Payload(open, str(marker), "w"),
        "torch.load": _Payload(torch.load, str(marker)),
        "os.remove": _Payload(os.remove, str(marker)),
        "importlib": _Payload(__import__("importlib").import_module, "os"),
        "dcp-module-attr": _Payload(torch.distributed.checkpoint.filesystem.os.system, touch),
    }


@pytest.mark.parametrize("name", list(_marker_payloads("x")))
def test_crafted_metadata_is_refused_before_any_object_is_built(tmp_path, name):
    marker = tmp_path / "pwned"
    data = pickle.dumps(_marker_payloads(marker)[name])
    with pytest.raises(UnsafeMetadataError, match="refused"):
        load_metadata(data)
    assert not marker.exists()


def test_metadata_nested_inside_a_real_index_is_refused(tmp_path):
    """A payload hidden in a field of a genuine index (DCP's own classes around it)."""
    folder, _, _ = _tiny_checkpoint(tmp_path)
    meta = load_metadata((folder / ".metadata").read_bytes())
    marker = tmp_path / "pwned"
    meta.planner_data = _Payload(os.system, f"touch {marker}")
    (folder / ".metadata").write_bytes(pickle.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="untrusted .metadata.*posix.system|untrusted"):
        ckpt.read_trainer_state(folder)
    assert not marker.exists()


def test_a_genuine_index_still_loads(tmp_path):
    folder, model, opt = _tiny_checkpoint(tmp_path)
    meta = load_metadata((folder / ".metadata").read_bytes())
    assert meta.storage_data
    assert ckpt.read_trainer_state(folder).step == 2
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh(torch.ones(1, 3)).sum().backward()
    fresh_opt.step()
    ckpt.load_checkpoint(folder, fresh, fresh_opt, lora=False)
    torch.testing.assert_close(fresh.weight, model.weight)


def test_crafted_non_tensor_entry_runs_no_code(tmp_path):
    """DCP's default planner reads non-tensor entries with torch.load(weights_only=False)."""
    folder, _, _ = _tiny_checkpoint(tmp_path)
    meta = load_metadata((folder / ".metadata").read_bytes())
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Payload(os.system, f"touch {marker}"), buf)
    payload = buf.getvalue()
    byte_items = [k for k, v in meta.state_dict_metadata.items()
                  if type(v).__name__ == "BytesStorageMetadata"]
    assert byte_items, "the optimizer's param_groups are saved as bytes entries"
    shard = folder / "__0_0.distcp"
    offset = shard.stat().st_size
    with shard.open("ab") as fh:
        fh.write(payload)
    for index, info in meta.storage_data.items():
        if index.fqn in byte_items:
            info.offset, info.length = offset, len(payload)
    (folder / ".metadata").write_bytes(pickle.dumps(meta))
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_checkpoint(folder, model, opt, lora=False)
    assert not marker.exists()


def test_shard_path_outside_the_folder_is_refused(tmp_path):
    folder, _, _ = _tiny_checkpoint(tmp_path)
    meta = load_metadata((folder / ".metadata").read_bytes())
    for info in meta.storage_data.values():
        info.relative_path = "../../etc/passwd"
    (folder / ".metadata").write_bytes(pickle.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="outside the folder"):
        ckpt.read_trainer_state(folder)


def _resume_refused(tmp_path, capsys, broken_name="step-000002"):
    cfg = tiny_config(tmp_path)
    path = write_config(tmp_path, cfg)
    code = main(["--config", str(path), "--resume"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err
    errors = [e for e in read_events(tmp_path / "tiny") if e["type"] == "error"]
    assert errors and errors[-1]["kind"] == "checkpoint"
    return err, errors[-1], path


def _plant(tmp_path, metadata: bytes):
    folder, _, _ = _tiny_checkpoint(tmp_path / "tiny")
    (folder / ".metadata").write_bytes(metadata)
    return folder


def test_resume_from_crafted_checkpoint_runs_nothing_and_says_so(tmp_path, capsys):
    marker = tmp_path / "pwned"
    folder = _plant(tmp_path, pickle.dumps(_Payload(os.system, f"touch {marker}")))
    err, error, _ = _resume_refused(tmp_path, capsys)
    assert not marker.exists()
    assert f"checkpoint {folder}: untrusted .metadata" in err
    assert len([ln for ln in err.splitlines() if ln.startswith("osstune: error:")]) == 1


def test_truncated_checkpoint_hint_is_a_command_the_cli_accepts(tmp_path, capsys):
    folder, _, _ = _tiny_checkpoint(tmp_path / "tiny")
    shard = folder / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:10])
    err, error, path = _resume_refused(tmp_path, capsys)
    assert "truncated" in error["message"]
    command = error["hint"].split("`")[1]
    argv = shlex.split(command)
    assert argv[:2] == ["osstune", "run"] and "--resume" in argv
    assert str(folder) in error["hint"]
    from osstune.tui.cli import app

    # The CLI takes the line as written: it refuses it for the checkpoint, not for its syntax.
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 2, result.output  # the engine's refusal, not "the engine exited"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("osstune: error: checkpoint "), lines
    assert "truncated" in lines[0] and "the engine exited" not in lines[0]
    assert "No such option" not in result.output and "Usage:" not in result.output


def test_trust_remote_code_is_warned_about(tmp_path, capsys):
    cfg = tiny_config(tmp_path, training={"max_steps": 1})
    cfg["model"]["trust_remote_code"] = True
    path = write_config(tmp_path, cfg)
    assert main(["--config", str(path), "--no-save"]) == 0, capsys.readouterr().err
    warnings = [e["message"] for e in read_events(tmp_path / "tiny") if e["type"] == "warning"]
    assert any("trust_remote_code: true runs Python code" in w for w in warnings)


def test_untrusted_sharded_merge_is_one_line(tmp_path):
    from osstune.engine.trainer.merge import main as merge_main

    marker = tmp_path / "pwned"
    _plant(tmp_path, pickle.dumps(_Payload(os.system, f"touch {marker}")))
    path = write_config(tmp_path, tiny_config(tmp_path))
    assert merge_main(["sharded", str(path), str(tmp_path / "tiny")]) == 2
    assert not marker.exists()


def test_crafted_json_state_is_refused_without_traceback(tmp_path, capsys):
    folder, _, _ = _tiny_checkpoint(tmp_path / "tiny")
    (folder / ckpt.STATE_FILE).write_text(json.dumps({"step": "x" * 10, "evil": 1}))
    err, error, _ = _resume_refused(tmp_path, capsys)
    assert "corrupt trainer_state.json" in err


