"""FSDP on one process: `osstune run` with `distributed.gpus: 1, fsdp: true` launches through
torchrun and trains (it used to start a plain process that died on the env:// rendezvous); the
engine started directly gets a local process group; CPU offload changes where tensors live, not
the loss curve."""

from __future__ import annotations

import subprocess
import sys

import pytest

from osstune.engine.session.launch import ENGINE_MODULE, build_command
from tests.engine_fixtures import (
    REPO,
    engine_env,
    last_run_end,
    read_events,
    run_engine,
    step_losses,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.slow

ONE_RANK = {"gpus": 1, "fsdp": True, "backend": "gloo"}
TRAINING = {"max_steps": 3, "gradient_checkpointing": True, "sequence_len": 256}
NO_SAVE = {"save_steps": 100, "export": False}


def test_one_process_fsdp_launches_through_torchrun(tmp_path):
    cmd = build_command(tmp_path / "c.yaml", world_size=1, fsdp=True)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=1" in cmd and "--standalone" in cmd
    assert cmd[cmd.index(ENGINE_MODULE) - 1:][:2] == ["-m", ENGINE_MODULE]
    plain = build_command(tmp_path / "c.yaml", world_size=1, fsdp=False)
    assert "torch.distributed.run" not in plain


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same tiny run without FSDP: the loss curve the others must follow."""
    tmp = tmp_path_factory.mktemp("plain")
    cfg = tiny_config(tmp, "plain", training=TRAINING, output=NO_SAVE)
    proc = run_engine(["--config", str(write_config(tmp, cfg))])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return step_losses(tmp / "plain")


def test_osstune_run_one_gpu_fsdp_offload_trains(tmp_path, reference):
    cfg = tiny_config(tmp_path, "one", distributed={**ONE_RANK, "cpu_offload": True},
                      training=TRAINING, output=NO_SAVE)
    path = write_config(tmp_path, cfg)
    proc = subprocess.run([sys.executable, "-m", "osstune.tui.cli", "run", str(path)], cwd=REPO,
                          env=engine_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert last_run_end(tmp_path / "one")["status"] == "completed"
    start = next(e for e in read_events(tmp_path / "one") if e["type"] == "run_start")
    if not any(k in engine_env() for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")):
        assert start["cuda_alloc_conf"]["set_by"] == "engine"  # offload: pinned via host register
        assert "pinned_use_cuda_host_register:True" in start["cuda_alloc_conf"]["conf"]
    losses = step_losses(tmp_path / "one")
    assert set(losses) == {1, 2, 3}
    for step, loss in reference.items():  # offload moves tensors, not the math
        assert losses[step] == pytest.approx(loss, rel=1e-4), step


def test_two_ranks_with_offload_follow_the_curve_without_it(tmp_path):
    """Random init draws per rank, so the reference is the same 2-rank run kept on its device."""
    losses = {}
    for name, offload in (("kept", False), ("offloaded", True)):
        cfg = tiny_config(tmp_path, name, distributed={**ONE_RANK, "gpus": 2,
                                                       "cpu_offload": offload},
                          training=TRAINING, output=NO_SAVE)
        proc = run_engine(["--config", str(write_config(tmp_path, cfg))], nproc=2)
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[name] = step_losses(tmp_path / name)
    assert set(losses["offloaded"]) == {1, 2, 3}
    for step, loss in losses["kept"].items():
        assert losses["offloaded"][step] == pytest.approx(loss, rel=1e-4), step


def test_engine_started_directly_with_fsdp_gets_a_local_group(tmp_path, reference):
    cfg = tiny_config(tmp_path, "direct", distributed=ONE_RANK, training=TRAINING,
                      output=NO_SAVE)
    proc = run_engine(["--config", str(write_config(tmp_path, cfg))])  # no torchrun
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = step_losses(tmp_path / "direct")
    for step, loss in reference.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4), step

