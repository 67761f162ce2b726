"""engine.session.launch: the argv it builds (no shell, torchrun only for more than one process),
that it
stays torch-free, and a started process that fails reports through events and stderr."""

from __future__ import annotations

import subprocess
import sys

import pytest

from osstune.engine.plan.config import load_config
from osstune.engine.session.events import read_events
from osstune.engine.session.launch import (
    CONFIG_FILE,
    ENGINE_MODULE,
    TrainingProcess,
    build_command,
    serve_commands,
)


def test_one_process_runs_python_directly(tmp_path):
    cmd = build_command(tmp_path / "c.yaml", world_size=1)
    assert cmd == [sys.executable, "-m", ENGINE_MODULE, "--config", str(tmp_path / "c.yaml")]


def test_several_processes_run_under_torchrun(tmp_path):
    cmd = build_command(tmp_path / "c.yaml", world_size=2, resume=True, force=True,
                        output_dir=tmp_path / "out")
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in cmd and "--nnodes=1" in cmd and "--standalone" in cmd
    tail = cmd[cmd.index(ENGINE_MODULE) - 1:]
    assert tail == ["-m", ENGINE_MODULE, "--config", str(tmp_path / "c.yaml"), "--output",
                    str(tmp_path / "out"), "--resume", "--force"]


def test_multi_node_needs_a_rendezvous(tmp_path):
    cmd = build_command(tmp_path / "c.yaml", world_size=16, nnodes=2,
                        rdzv_endpoint="node0:29500", node_rank=1)
    assert "--nproc-per-node=8" in cmd and "--nnodes=2" in cmd
    assert "--rdzv-endpoint=node0:29500" in cmd and "--node-rank=1" in cmd
    assert "--standalone" not in cmd
    with pytest.raises(ValueError, match="rendezvous"):
        build_command(tmp_path / "c.yaml", world_size=16, nnodes=2)


def test_serve_commands_fill_in_tensor_parallel():
    vllm, sglang = serve_commands("/m", 8)
    assert vllm == "vllm serve /m --tensor-parallel-size 8"
    assert sglang == "python -m sglang.launch_server --model-path /m --tp 8"


def test_launch_and_preflight_stay_torch_free():
    code = ("import sys, osstune.engine.session.launch, osstune.engine.plan.preflight; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_failing_run_reports_an_error_event_and_exits_non_zero(tmp_path):
    cfg = load_config("tiny-cpu-demo", [f"dataset.path={tmp_path / 'missing.jsonl'}"])
    proc = TrainingProcess()
    proc.start(cfg, tmp_path / "out", env={"HF_HUB_OFFLINE": "1"})
    assert proc.wait(timeout=120) == 2
    assert load_config(str(tmp_path / "out" / CONFIG_FILE)) == cfg
    events = read_events(tmp_path / "out")
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "dataset" and "missing.jsonl" in error["message"]
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "failed"
    assert any("osstune: error:" in line for line in proc.stderr_tail(10))


def test_a_locked_folder_is_refused_before_the_config_is_written(tmp_path):
    from osstune.engine.session.lock import OutputLock, RunLocked

    held = OutputLock.acquire(tmp_path / "out")
    cfg = load_config("tiny-cpu-demo")
    with pytest.raises(RunLocked, match="in use by a live run"):
        TrainingProcess().start(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / CONFIG_FILE).exists()
    held.release()


def test_the_engine_log_goes_to_a_file_and_is_tailed(tmp_path):
    from osstune.engine.session.launch import ENGINE_LOG

    cfg = load_config("tiny-cpu-demo", [f"dataset.path={tmp_path / 'missing.jsonl'}"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ENGINE_LOG).write_text("an earlier attempt\n")
    proc = TrainingProcess()
    proc.start(cfg, tmp_path / "out", env={"HF_HUB_OFFLINE": "1"})
    assert proc.proc.stderr is None  # no pipe that could close under the engine
    assert proc.wait(timeout=120) == 2
    log = (tmp_path / "out" / ENGINE_LOG).read_text()
    assert log.startswith("an earlier attempt\n") and "missing.jsonl" in log
    assert "an earlier attempt" not in proc.stderr_tail(50)  # this run's lines only
