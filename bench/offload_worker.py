"""One engine run under torchrun with the GPU capped to a smaller card, timing the CPU side.

    OSSTUNE_BENCH_CAP_GIB=23.5 OSSTUNE_BENCH_TIMINGS=t.json \\
        torchrun --nproc-per-node 1 bench/offload_worker.py --config RUN.yaml --no-save

OSSTUNE_BENCH_PASS_TOKENS overrides the tokens per merged offload pass (engine.trainer.offload).
OSSTUNE_BENCH_BEFORE=1 starts the allocator as main did before the offload memory work:
expandable segments only, no host-register pinning (bench_offload.py --main-mode also sets
`distributed.reduce_dtype: float32` in the run's config).
Runs `osstune.engine.trainer.train.main` in this process after
`torch.cuda.set_per_process_memory_fraction` (cap) and wraps, per optimizer step, the
forward/backward (synchronised), `AdamW.step`, the grad-norm clip and `Tensor.pin_memory` with
timers; at exit writes their seconds, the peak host RSS, the pinned host allocator's and Dynamo's
compile statistics, the reserved/allocated bytes per CUDA stream (which stream's cache holds the
reserved memory) and the pinned host <-> GPU copy bandwidth of this machine to
OSSTUNE_BENCH_TIMINGS (JSON). The worker's pid goes to OSSTUNE_BENCH_TIMINGS + ".pid" so a
harness that times out can kill it directly.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

from osstune.engine.plan.units import GIB
from osstune.engine.trainer.allocator import ENV, EXPANDABLE

BEFORE = os.environ.get("OSSTUNE_BENCH_BEFORE") == "1"
if BEFORE:  # main's allocator setting, as a user-set value the engine keeps
    os.environ[ENV] = EXPANDABLE

import torch  # noqa: E402

TIMINGS: dict[str, list[float]] = {"forward_backward_s": [], "optimizer_s": [], "clip_s": []}
PINNED = {"pin_memory_s": 0.0, "pin_memory_gib": 0.0, "pin_memory_calls": 0}


def _timed(fn, key, sync: bool = False):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        TIMINGS[key].append(round(time.perf_counter() - start, 3))
        return result
    return wrapper


def _timed_pin(fn):
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        result = fn(self, *args, **kwargs)
        PINNED["pin_memory_s"] += time.perf_counter() - start
        PINNED["pin_memory_gib"] += self.numel() * self.element_size() / GIB
        PINNED["pin_memory_calls"] += 1
        return result
    return wrapper


def copy_bandwidth(gib: float = 2.0) -> dict[str, float]:
    """Pinned host -> GPU and GPU -> pinned host, GB/s (one large copy each, after a warm-up)."""
    n = int(gib * GIB)
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    out = {}
    for name, dst, src in (("h2d_gb_s", dev, host), ("d2h_gb_s", host, dev)):
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        out[name] = round(n / (time.perf_counter() - start) / 1e9, 1)
    return out


def memory_by_stream() -> dict[str, Any]:
    """Reserved and allocated GiB per CUDA stream (the cache of one stream serves no other), the
    allocator's retry/OOM counts and peaks, read before anything is freed."""
    streams: dict[str, dict[str, float]] = {}
    expandable = 0
    for seg in torch.cuda.memory_snapshot():
        row = streams.setdefault(str(seg.get("stream", "?")), {"reserved_gib": 0.0,
                                                               "allocated_gib": 0.0})
        row["reserved_gib"] += seg["total_size"] / GIB
        row["allocated_gib"] += seg["allocated_size"] / GIB
        expandable += bool(seg.get("is_expandable"))
    stats = torch.cuda.memory_stats()
    return {"streams": {k: {n: round(v, 3) for n, v in row.items()} for k, row in streams.items()},
            "expandable_segments": expandable,
            **{k: stats.get(k) for k in ("num_alloc_retries", "num_ooms",
                                         "reserved_bytes.all.peak", "allocated_bytes.all.peak")}}


def extras() -> dict[str, Any]:
    """What the first step spends beyond the steady ones: pinning, compiling."""
    out: dict[str, Any] = {k: round(v, 3) for k, v in PINNED.items()}
    host_stats = getattr(torch.cuda, "host_memory_stats", None)
    if torch.cuda.is_available() and host_stats is not None:
        try:
            out["host_memory_stats"] = {k: v for k, v in host_stats().items()
                                        if isinstance(v, (int, float))}
        except Exception as e:  # a statistic is not worth the run
            out["host_memory_stats"] = f"unavailable: {e}"
    try:
        from torch._dynamo.utils import compile_times

        out["compile_times"] = str(compile_times(repr="str", aggregate=True))[-3000:]
    except Exception as e:
        out["compile_times"] = f"unavailable: {e}"
    return out


def patch_engine() -> None:
    from osstune.engine.trainer import step

    step.forward_backward = _timed(step.forward_backward, "forward_backward_s", sync=True)
    step.clip_gradients = _timed(step.clip_gradients, "clip_s")
    torch.optim.AdamW.step = _timed(torch.optim.AdamW.step, "optimizer_s")
    torch.Tensor.pin_memory = _timed_pin(torch.Tensor.pin_memory)
    if os.environ.get("OSSTUNE_BENCH_PASS_TOKENS"):  # tokens per merged offload pass
        from osstune.engine.trainer import offload

        offload.PASS_TOKENS = int(os.environ["OSSTUNE_BENCH_PASS_TOKENS"])


def main() -> int:
    path = os.environ.get("OSSTUNE_BENCH_TIMINGS")
    if path:
        with open(path + ".pid", "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
    cuda = torch.cuda.is_available()  # without: a CPU check of the harness (bench --tiny)
    cap = float(os.environ.get("OSSTUNE_BENCH_CAP_GIB", "0"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        total = torch.cuda.get_device_properties(0).total_memory
        if cap:
            torch.cuda.set_per_process_memory_fraction(min(cap * GIB / total, 1.0))
    patch_engine()
    from osstune.engine.trainer import train

    code = train.main(sys.argv[1:])
    result: dict[str, object] = dict(TIMINGS)
    result["exit_code"] = code
    result["before_mode"] = BEFORE
    result["peak_host_rss_gib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    result["threads"] = torch.get_num_threads()
    result.update(extras())
    if cuda:
        try:  # the figures above are worth more than these
            result["memory"] = memory_by_stream()
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0)
            result.update(copy_bandwidth())
        except Exception as e:
            result["memory_error"] = f"{type(e).__name__}: {e}"
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
