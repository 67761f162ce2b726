"""Per-rank loading under FSDP (gloo, 2 and 4 ranks): each rank reads only its shard's slices of
a sharded safetensors checkpoint (bf16, and MXFP4 experts dequantized per slice) and the model
equals a single-process `from_pretrained`; a checkpoint that does not match the config stops
every rank with one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from osstune.engine.plan.config import load_config
from osstune.engine.session.events import read_events
from osstune.engine.trainer.model import load_model_config, load_pretrained
from tests.checkpoint_fixtures import write_tiny_checkpoint
from tests.engine_fixtures import REPO, engine_env, run_engine, tiny_config, write_config

pytestmark = pytest.mark.slow


def _pretrained_config(tmp, folder, name, nproc, **arch):
    return tiny_config(tmp, name, model={"id": str(folder), "init": "pretrained",
                                         "architecture": arch, "dtype": "float32",
                                         "tokenizer": "openai/gpt-oss-20b"},
                       distributed={"gpus": nproc, "fsdp": True, "backend": "gloo"},
                       training={"max_steps": 1, "gradient_checkpointing": False})


def _worker(path, out, nproc):
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", str(REPO / "tests" / "sharded_load_worker.py"),
           str(path), str(out)]
    return subprocess.run(cmd, cwd=REPO, env=engine_env(), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize(("nproc", "mxfp4"), [(2, False), (4, True)])
def test_each_rank_reads_its_shard_and_matches_one_process(tmp_path, nproc, mxfp4):
    folder = write_tiny_checkpoint(tmp_path / "ckpt", mxfp4=mxfp4)
    path = write_config(tmp_path, _pretrained_config(tmp_path, folder, "run", nproc))
    proc = _worker(path, tmp_path / "out", nproc)
    assert proc.returncode == 0, proc.stderr[-4000:]

    cfg = load_config(str(path))
    reference = load_pretrained(cfg, load_model_config(cfg, torch.device("cpu")),
                                torch.device("cpu")).state_dict()
    loaded = load_file(tmp_path / "out" / "full.safetensors")
    params = {k for k in reference if "rotary" not in k}
    assert params <= loaded.keys()
    for key in params:
        torch.testing.assert_close(loaded[key], reference[key], rtol=0, atol=0, msg=key)
    total = sum(reference[k].numel() for k in params)
    for rank in range(nproc):
        stats = json.loads((tmp_path / "out" / f"rank{rank}.json").read_text())
        # Only its own rows: exactly the local shard, never the whole model.
        assert stats["elements_read"] == stats["local_elements"]
        assert stats["elements_read"] <= total // nproc + total // 10


def test_a_checkpoint_that_does_not_match_the_config_stops_every_rank(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "ckpt", files=2)
    cfg = _pretrained_config(tmp_path, folder, "bad", 2, intermediate_size=64)
    started = time.monotonic()
    proc = run_engine(["--config", str(write_config(tmp_path, cfg))], nproc=2, timeout=180)
    assert time.monotonic() - started < 120  # no rank waits in a collective for its peer
    assert proc.returncode != 0
    events = read_events(tmp_path / "bad")
    assert [e["type"] for e in events][-2:] == ["error", "run_end"]
    assert events[-2]["kind"] == "model" and events[-1]["status"] == "failed"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("osstune: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "has shape" in errors[0] and "the config gives" in errors[0]
    # Every rank finds the mismatch (shapes come from the checkpoint's header, the same on all):
    # rank 0 prints the line above, and the first rank to leave exits with the user-error code;
    # torchrun then stops any rank still tearing down (its summary lists it as SIGTERM).
    assert "engine/trainer" not in proc.stderr, proc.stderr[-3000:]
    assert "exitcode  : 2" in proc.stderr, proc.stderr[-3000:]
