"""The process the engine runs in: rank and device, the process group, the stop signal, the log.

Nothing here knows about models or data; every stage of engine/trainer/train.py receives a
`Runtime` and logs through `log`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.preflight import uses_gpus


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def runtime_for(cfg: RunConfig) -> Runtime:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if uses_gpus(cfg) and torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return Runtime(rank, world, local, device)


def tune_threads(cfg: RunConfig, rt: Runtime) -> None:
    """CPU memory reuse and, with CPU offload, enough threads for the host optimizer step."""
    if rt.device.type == "cpu":
        keep_freed_memory()
    if cfg.distributed.cpu_offload and os.environ.get("OMP_NUM_THREADS") == "1":
        # torchrun's default of one thread would leave the offloaded optimizer step on one core.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(
            int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)))


def init_process_group(rt: Runtime, fsdp: bool = False) -> None:
    """FSDP needs a group also on one process; started without torchrun, it gets a local one."""
    if rt.world_size == 1 and not fsdp:
        return
    # gloo beside NCCL: CPU-offloaded shards (grad-norm reduction, checkpoint planning).
    backend = "cuda:nccl,cpu:gloo" if rt.device.type == "cuda" else "gloo"
    if "MASTER_ADDR" not in os.environ and rt.world_size == 1:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    else:
        dist.init_process_group(backend)


def barrier(rt: Runtime) -> None:
    if rt.world_size > 1:
        dist.barrier()


def keep_freed_memory() -> None:
    """CPU runs: stop glibc from returning big freed blocks to the OS after every step.

    Each step allocates and frees the same large tensors; by default each one is a fresh mmap
    whose pages the kernel zeroes again (half the wall time of the tiny demo went to page faults).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 31)
    except (OSError, AttributeError):
        pass


def log(message: str) -> None:
    """One line to stderr, from rank 0 only (the front-ends show stderr as the log tail)."""
    if os.environ.get("RANK", "0") == "0":
        with contextlib.suppress(OSError):  # a closed stderr never ends a run
            print(f"[engine] {message}", file=sys.stderr, flush=True)


class StopRequest:
    """SIGINT/SIGTERM/SIGHUP: finish the current step, checkpoint, end with status `stopped`.

    A second signal interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log(f"{signal.Signals(signum).name}: stopping after this step (again to abort)")
