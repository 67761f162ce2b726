"""Step metrics: per-rank memory gathered to rank 0, throughput, MFU. Peaks reset after each log.

Units are in the names (`_gib`, `_s`, `tokens_per_s`). The memory figures are peaks since the
previous step event: `device_mem_reserved_gib` is `torch.cuda.max_memory_reserved()`, the number
that decides whether a run fits; on CPU every figure is 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from osstune.engine.plan.speed import GPU_SPECS
from osstune.engine.plan.units import GIB

# Dense bf16 tensor-core peak (no sparsity), by substring of the device name: the estimator's
# table (engine/plan/speed.py), one place for both.
PEAK_BF16_FLOPS = tuple((key, flops) for key, flops, _bandwidth in GPU_SPECS)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def device_memory_gib(device: torch.device) -> float:
    if device.type != "cuda":
        return 0.0
    return torch.cuda.get_device_properties(device).total_memory / GIB


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = device_name(device)
    for key, flops in PEAK_BF16_FLOPS:
        if key in name:
            return flops
    return None


def local_memory(device: torch.device) -> list[float]:
    """[reserved peak, allocated peak, active peak] in GiB since the last reset."""
    if device.type != "cuda":
        return [0.0, 0.0, 0.0]
    stats = torch.cuda.memory_stats(device)
    return [torch.cuda.max_memory_reserved(device) / GIB,
            torch.cuda.max_memory_allocated(device) / GIB,
            stats.get("active_bytes.all.peak", 0) / GIB]


def reset_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gather_memory(device: torch.device, rank: int, world_size: int) -> list[dict[str, Any]]:
    """Collective: every rank's peaks, in rank order (meaningful on rank 0, identical on all)."""
    mine = torch.tensor([float(rank), *local_memory(device)], dtype=torch.float64, device=device)
    if world_size > 1:
        parts = [torch.zeros_like(mine) for _ in range(world_size)]
        dist.all_gather(parts, mine)  # a CPU-GPU sync point: only on log steps
    else:
        parts = [mine]
    reset_peaks(device)
    rows = []
    for part in parts:
        r, reserved, allocated, active = part.tolist()
        rows.append({"rank": int(r), "device_mem_reserved_gib": round(reserved, 3),
                     "mem_allocated_gib": round(allocated, 3), "mem_active_gib": round(active, 3)})
    return rows


def gather_devices(device: torch.device, rank: int, world_size: int) -> list[dict[str, Any]]:
    """Collective: name and memory size of each rank's device for run_start."""
    mine = {"rank": rank, "name": device_name(device),
            "memory_total_gib": round(device_memory_gib(device), 2)}
    if world_size == 1:
        return [mine]
    every: list[Any] = [None] * world_size
    dist.all_gather_object(every, mine)
    return every


def mfu(tokens_per_s: float, flops_token: float, device: torch.device, world_size: int
        ) -> float | None:
    peak = peak_flops(device)
    if not peak:
        return None
    return tokens_per_s * flops_token / (peak * world_size)
