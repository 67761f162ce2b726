"""The CUDA allocator settings a run starts with (`PYTORCH_CUDA_ALLOC_CONF`), unless the user set
their own (`PYTORCH_CUDA_ALLOC_CONF` or torch's newer `PYTORCH_ALLOC_CONF`): run_start says which.

- `expandable_segments:True`, every run: a stream's cached blocks grow one mapped segment instead
  of many fixed-size ones, so blocks freed by a smaller tensor are reused by a larger one. FSDP's
  gather and reduce buffers (own streams, a different size per layer group) left 27 GiB reserved
  for 12 GiB allocated on the 2-GPU offload run without it (README, "CPU offload"); the LoRA and
  non-offloaded points of bench/calibration were measured with it, so it stays on for them too.
- `pinned_use_cuda_host_register:True,pinned_num_register_threads:8`, offloaded runs only: their
  first step pins the host gradients (one per parameter, as large as the weights: 15.5 GB on the
  8-layer proxy); page-faulting that memory on 8 threads and then registering it is faster than
  `cudaHostAlloc` faulting and pinning on one. Runs without offload pin almost nothing.

Read when CUDA initialises (in `runtime_for`), so `apply` runs before it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ENV = "PYTORCH_CUDA_ALLOC_CONF"
USER_ENVS = (ENV, "PYTORCH_ALLOC_CONF")
EXPANDABLE = "expandable_segments:True"
PINNED_REGISTER = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"


def engine_conf(cpu_offload: bool) -> str:
    return f"{EXPANDABLE},{PINNED_REGISTER}" if cpu_offload else EXPANDABLE


def apply(cpu_offload: bool, environ: MutableMapping[str, str] | None = None
          ) -> dict[str, str]:
    """Set the engine's settings unless the user set theirs; returns {"conf", "set_by"}."""
    env = os.environ if environ is None else environ
    for name in USER_ENVS:
        if env.get(name):
            return {"conf": env[name], "set_by": f"user ({name})"}
    env[ENV] = engine_conf(cpu_offload)
    return {"conf": env[ENV], "set_by": "engine"}
