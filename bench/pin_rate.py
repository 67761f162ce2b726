"""How fast this machine pins host memory: torch's default (`cudaHostAlloc`) against the engine's
offload setting (`pinned_use_cuda_host_register:True,pinned_num_register_threads:8`: malloc,
page-fault on 8 threads, then `cudaHostRegister`; engine/trainer/allocator.py).

    python bench/pin_rate.py --gib 2 --count 2 --out pin.json

Each mode in a process of its own (the setting is read from PYTORCH_CUDA_ALLOC_CONF when CUDA
starts); every tensor stays alive, so none is served from the pinned cache. Prints and writes
seconds and GB/s per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from osstune.engine.plan.units import GIB
from osstune.engine.trainer.allocator import engine_conf

MODES = {"cudaHostAlloc": engine_conf(cpu_offload=False),
         "host_register_8_threads": engine_conf(cpu_offload=True)}


def measure(gib: float, count: int) -> dict[str, float]:
    import torch

    torch.cuda.init()
    torch.empty(1, pin_memory=True)  # the host allocator's own start-up, outside the timing
    keep = []
    n = int(gib * GIB)
    start = time.perf_counter()
    for _ in range(count):
        keep.append(torch.empty(n, dtype=torch.uint8, pin_memory=True))
    seconds = time.perf_counter() - start
    assert all(t.is_pinned() for t in keep)
    return {"seconds": round(seconds, 3), "gb_s": round(count * n / seconds / 1e9, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=2.0, help="GiB per pinned tensor")
    p.add_argument("--count", type=int, default=2)
    p.add_argument("--out", help="JSON file for both modes")
    p.add_argument("--child", action="store_true", help="measure this process's mode only")
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.gib, args.count)), flush=True)
        return 0
    result: dict[str, object] = {"gib_each": args.gib, "count": args.count}
    for mode, conf in MODES.items():
        env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": conf}
        env.pop("PYTORCH_ALLOC_CONF", None)
        proc = subprocess.run([sys.executable, __file__, "--child", "--gib", str(args.gib),
                               "--count", str(args.count)], env=env, capture_output=True,
                              text=True, timeout=120)
        lines = proc.stdout.strip().splitlines()
        result[mode] = json.loads(lines[-1]) if proc.returncode == 0 and lines else \
            {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
        if args.out:  # after each mode: a later failure keeps the earlier one
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
