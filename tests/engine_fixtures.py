"""Shared helpers for the engine tests: tiny configs, running the engine, reading losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from osstune.engine.session.events import read_events
from osstune.engine.session.launch import ENGINE_MODULE

REPO = Path(__file__).resolve().parent.parent

TINY_ARCH = {
    "num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 32,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 16,
}


def tiny_config(tmp: Path, name: str = "tiny", **sections: Any) -> dict[str, Any]:
    """A tiny GPT-OSS run on the builtin sample; keyword sections are merged in."""
    cfg: dict[str, Any] = {
        "name": name,
        "model": {"id": "openai/gpt-oss-20b", "init": "random", "architecture": dict(TINY_ARCH),
                  "dtype": "float32", "attn_implementation": "eager"},
        "method": "full",
        "distributed": {"gpus": 0},
        "training": {"learning_rate": 3e-3, "lr_scheduler": "cosine", "warmup_steps": 1,
                     "sequence_len": 256, "micro_batch_size": 2,
                     "gradient_accumulation_steps": 2, "max_steps": 4,
                     "optimizer": "adamw_torch", "gradient_checkpointing": False},
        "dataset": {"path": "builtin:osstune-sample"},
        "output": {"dir": str(tmp / name), "save_steps": 2, "keep_last": 2},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def write_config(tmp: Path, cfg: dict[str, Any], filename: str | None = None) -> Path:
    path = tmp / (filename or f"{cfg['name']}.yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_engine(args: list[str], nproc: int = 1, timeout: float = 240
               ) -> subprocess.CompletedProcess[str]:
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", ENGINE_MODULE, *args]
    else:
        cmd = [sys.executable, "-m", ENGINE_MODULE, *args]
    return subprocess.run(cmd, cwd=REPO, env=engine_env(), capture_output=True, text=True,
                          timeout=timeout)


def step_losses(output_dir: Path) -> dict[int, float]:
    """step -> loss of the last attempt that logged that step."""
    return {e["step"]: e["loss"] for e in read_events(output_dir) if e["type"] == "step"}


def last_run_end(output_dir: Path) -> dict[str, Any]:
    ends = [e for e in read_events(output_dir) if e["type"] == "run_end"]
    assert ends, f"no run_end in {output_dir}"
    return ends[-1]


def wait_for_event(output_dir: Path, kind: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in read_events(output_dir):
            if event["type"] == kind:
                return event
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event in {output_dir} within {timeout}s")


def interrupt(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGINT)


# GiB of gpt-oss-20b in the hub's MXFP4 layout: the full-size folder our writer made on the H200
# (bench/results/2026-11-29-h200-hub-20b-folder-write.json), which the disk estimate must match.
HUB_20B_GIB = 12.82
