"""Launching the engine as a subprocess; torch-free (the CLI and the wizard import it).

`build_command` gives the argv (torchrun through `python -m torch.distributed.run` for more than
one process and for FSDP on one process, which needs a process group; plain
`python -m osstune.engine.trainer.train` otherwise; never a shell).
`TrainingProcess` takes the output folder's lock, writes the effective config to
OUTPUT/config.yaml, starts the engine in its own session and exposes its events and the tail of
its log (OUTPUT/engine.log).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from osstune.engine.plan.config import RunConfig, dump_config
from osstune.engine.session.events import EVENTS_FILE, EventReader
from osstune.engine.session.lock import TOKEN_ENV, OutputLock

CONFIG_FILE = "config.yaml"
ENGINE_LOG = "engine.log"
STDERR_LINES = 400


# The engine entry point; a module name, never a shell line.
ENGINE_MODULE = "osstune.engine.trainer.train"


def uses_torchrun(world_size: int, nnodes: int = 1, fsdp: bool = False) -> bool:
    """More than one process, or FSDP on one (a one-GPU full fine-tune with CPU offload)."""
    return world_size > 1 or nnodes > 1 or fsdp


def build_command(config_path: Path, world_size: int, nnodes: int = 1, resume: bool | str = False,
                  output_dir: Path | None = None, force: bool = False,
                  rdzv_endpoint: str | None = None, node_rank: int | None = None,
                  fsdp: bool = False) -> list[str]:
    """argv for one node. Multi-node: pass the same rdzv_endpoint (host:port) on every node."""
    engine_args = ["-m", ENGINE_MODULE, "--config", str(config_path)]
    if output_dir is not None:
        engine_args += ["--output", str(output_dir)]
    if resume:  # True: the last finished checkpoint; a path: that checkpoint
        engine_args += ["--resume", resume] if isinstance(resume, str) else ["--resume"]
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


class LogTail:
    """The last lines of a growing text file, read incrementally from where it stood at start."""

    def __init__(self, path: Path, keep: int = STDERR_LINES, back: int = 0) -> None:
        """Start at the file's end (an earlier attempt's log is not this run's), or `back`
        bytes before it (attaching to a run that is already going)."""
        self.path = path
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        try:
            self._offset = max(path.stat().st_size - back, 0)
        except OSError:
            self._offset = 0
        self._partial = b""

    def poll(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return list(self.lines)
        self._offset += len(chunk)
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self.lines.extend(raw.decode("utf-8", "replace").rstrip("\r") for raw in complete)
        return list(self.lines)

    def flush(self) -> None:
        """The writer is gone: a last line without its newline still counts."""
        self.poll()
        if self._partial:
            self.lines.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""


class TrainingProcess:
    """One engine run. `.events` yields new events; `.stop()` asks for a graceful stop, once.

    The process owns the output folder through `lock` (taken here unless the caller took it),
    writes the config under it, and starts the engine in its own session with the lock's file
    inherited, stdout to /dev/null and stderr appended to OUTPUT/engine.log: the engine never
    writes to a pipe or terminal that could close under it.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.output_dir: Path | None = None
        self.events: EventReader | None = None
        self.lock: OutputLock | None = None
        self.log: LogTail | None = None
        self.stop_sent = False

    def start(self, cfg: RunConfig, output_dir: str | os.PathLike[str], resume: bool | str = False,
              force: bool = False, env: dict[str, str] | None = None,
              lock: OutputLock | None = None) -> list[str]:
        out = Path(output_dir)
        self.lock = lock or OutputLock.acquire(out)  # before anything is written there
        try:
            return self._spawn(cfg, out, resume, force, env)
        except BaseException:
            if lock is None:  # ours: a launch that failed leaves the folder free
                self.lock.release()
            raise

    def _spawn(self, cfg: RunConfig, out: Path, resume: bool | str, force: bool,
               env: dict[str, str] | None) -> list[str]:
        assert self.lock is not None
        config_path = out / CONFIG_FILE
        config_path.write_text(dump_config(cfg), encoding="utf-8")
        cmd = build_command(config_path, cfg.distributed.world_size, cfg.distributed.nnodes,
                            resume=resume, output_dir=out, force=force,
                            fsdp=cfg.distributed.fsdp)
        child_env = {**os.environ, **(env or {}), TOKEN_ENV: self.lock.owner.token}
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        self.output_dir = out
        self.events = EventReader(out / EVENTS_FILE)
        self.events.skip_existing()  # earlier attempts: follow only what this run writes
        self.log = LogTail(out / ENGINE_LOG)
        with open(out / ENGINE_LOG, "ab") as log_file:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
                env=child_env, start_new_session=True, pass_fds=(self.lock.fd,))
        self.lock.set_pid(self.proc.pid)
        return cmd

    def stderr_tail(self, n: int = 20) -> list[str]:
        return [] if self.log is None else self.log.poll()[-n:]

    def poll(self) -> int | None:
        code = None if self.proc is None else self.proc.poll()
        if code is not None:
            self._ended()
        return code

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._ended()
        return code

    def _ended(self) -> None:
        if self.log is not None:
            self.log.flush()
        if self.lock is not None:
            self.lock.release()

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

        Sent once: the engine reads a second SIGINT as "abort now". torchrun itself is not
        signalled: it would tear the workers down before they save.
        """
        if self.proc is None or self.proc.poll() is not None or self.stop_sent:
            return
        self.stop_sent = True
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
