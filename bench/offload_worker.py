"""One engine run under torchrun with the GPU capped to a smaller card, timing the CPU side.

    OSSTUNE_BENCH_CAP_GIB=23.5 OSSTUNE_BENCH_TIMINGS=t.json \\
        torchrun --nproc-per-node 1 bench/offload_worker.py --config RUN.yaml --no-save

OSSTUNE_BENCH_PASS_TOKENS overrides the tokens per merged offload pass (engine.trainer.offload).
Runs `osstune.engine.trainer.train.main` in this process after
`torch.cuda.set_per_process_memory_fraction` (cap) and wraps `AdamW.step` and
`clip_grad_norm_` with timers; at exit writes their seconds, the peak host RSS and the pinned
host <-> GPU copy bandwidth of this machine to OSSTUNE_BENCH_TIMINGS (JSON).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402

GIB = 1024**3
TIMINGS: dict[str, list[float]] = {"optimizer_s": [], "clip_s": []}


def _timed(fn, key):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        TIMINGS[key].append(round(time.perf_counter() - start, 3))
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


def main() -> int:
    cuda = torch.cuda.is_available()  # without: a CPU check of the harness (bench --tiny)
    cap = float(os.environ.get("OSSTUNE_BENCH_CAP_GIB", "0"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        total = torch.cuda.get_device_properties(0).total_memory
        if cap:
            torch.cuda.set_per_process_memory_fraction(min(cap * GIB / total, 1.0))
    torch.optim.AdamW.step = _timed(torch.optim.AdamW.step, "optimizer_s")
    torch.nn.utils.clip_grad_norm_ = _timed(torch.nn.utils.clip_grad_norm_, "clip_s")
    from osstune.engine.trainer import train

    if os.environ.get("OSSTUNE_BENCH_PASS_TOKENS"):  # tokens per merged offload pass
        from osstune.engine.trainer import offload

        offload.PASS_TOKENS = int(os.environ["OSSTUNE_BENCH_PASS_TOKENS"])

    code = train.main(sys.argv[1:])
    result: dict[str, object] = dict(TIMINGS)
    result["exit_code"] = code
    result["peak_host_rss_gib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    result["threads"] = torch.get_num_threads()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0)
        result.update(copy_bandwidth())
    path = os.environ.get("OSSTUNE_BENCH_TIMINGS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
