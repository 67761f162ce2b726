"""Launching the engine as a subprocess; torch-free (the CLI and the wizard import it).

`build_command` gives the argv (torchrun through `python -m torch.distributed.run` for more than
one process and for FSDP on one process, which needs a process group; plain
`python -m engine.trainer.train` otherwise; never a shell). `TrainingProcess` writes the effective
config to OUTPUT/config.yaml, starts the engine in its own session and exposes its
events and the tail of its stderr.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from osstune.engine.plan.config import RunConfig, dump_config
from osstune.engine.session.events import EVENTS_FILE, EventReader

CONFIG_FILE = "config.yaml"
STDERR_LINES = 400


# The engine entry point; a module name, never a shell line.
ENGINE_MODULE = "osstune.engine.trainer.train"


def uses_torchrun(world_size: int, nnodes: int = 1, fsdp: bool = False) -> bool:
    """More than one process, or FSDP on one (a one-GPU full fine-tune with CPU offload)."""
    return world_size > 1 or nnodes > 1 or fsdp


def build_command(config_path: Path, world_size: int, nnodes: int = 1, resume: bool = False,
                  output_dir: Path | None = None, force: bool = False,
                  rdzv_endpoint: str | None = None, node_rank: int | None = None,
                  fsdp: bool = False) -> list[str]:
    """argv for one node. Multi-node: pass the same rdzv_endpoint (host:port) on every node."""
    engine_args = ["-m", ENGINE_MODULE, "--config", str(config_path)]
    if output_dir is not None:
        engine_args += ["--output", str(output_dir)]
    if resume:
        engine_args.append("--resume")
    if force:
        engine_args.append("--force")
    if not uses_torchrun(world_size, nnodes, fsdp):
        return [sys.executable, *engine_args]
    per_node = max(world_size // max(nnodes, 1), 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={per_node}",
           f"--nnodes={nnodes}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ValueError("multi-node runs need a rendezvous endpoint (host:port)")
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
        if node_rank is not None:
            cmd.append(f"--node-rank={node_rank}")
    return [*cmd, *engine_args]


def serve_commands(model_dir: str | Path, tensor_parallel: int) -> list[str]:
    """How to serve an exported model with vLLM and SGLang."""
    tp = max(int(tensor_parallel), 1)
    return [
        f"vllm serve {model_dir} --tensor-parallel-size {tp}",
        f"python -m sglang.launch_server --model-path {model_dir} --tp {tp}",
    ]


def serving_tensor_parallel(cfg: RunConfig) -> int:
    """GPUs to serve on: gpt-oss-20b fits one 80 GB card in bf16; larger models use the run's."""
    return 1 if "120b" not in cfg.model.id else max(cfg.distributed.world_size, 1)


class TrainingProcess:
    """One engine run. `.events` yields new events; `.stop()` asks for a graceful stop."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.output_dir: Path | None = None
        self.events: EventReader | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._reader: threading.Thread | None = None

    def start(self, cfg: RunConfig, output_dir: str | os.PathLike[str], resume: bool = False,
              force: bool = False, env: dict[str, str] | None = None) -> list[str]:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        config_path = out / CONFIG_FILE
        config_path.write_text(dump_config(cfg), encoding="utf-8")
        cmd = build_command(config_path, cfg.distributed.world_size, cfg.distributed.nnodes,
                            resume=resume, output_dir=out, force=force,
                            fsdp=cfg.distributed.fsdp)
        repo_root = Path(__file__).resolve().parent.parent
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(repo_root), child_env.get("PYTHONPATH", "")) if p)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        self.output_dir = out
        self.events = EventReader(out / EVENTS_FILE)
        if resume:
            self.events.poll()  # the file holds earlier attempts: follow only what comes next
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=child_env, start_new_session=True)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        return cmd

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def stderr_tail(self, n: int = 20) -> list[str]:
        return list(self._stderr)[-n:]

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def _workers(self) -> list[int]:
        """The engine processes: the child itself, or torchrun's worker children."""
        assert self.proc is not None
        try:
            import psutil

            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:
            kids = []
        workers = [k.pid for k in kids if ENGINE_MODULE in " ".join(_cmdline(k))]
        return workers or [self.proc.pid]

    def stop(self) -> None:
        """SIGINT to every engine process: each finishes its step, checkpoints and exits.

        torchrun itself is not signalled: it would tear the workers down before they save.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in self._workers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _cmdline(process: object) -> list[str]:
    try:
        return process.cmdline()  # type: ignore[attr-defined]
    except Exception:
        return []
