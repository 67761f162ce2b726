"""The training process (imports torch): model, levers, loop, checkpoints, export."""

import os

# Before torch loads its OpenMP runtime (read once, at load): threads that wait between parallel
# regions sleep instead of spinning. A CPU run of a small model is thousands of short regions; on
# a shared or busy machine the spinning threads took 3-5x the CPU time of the work (the CPU demo's
# model body: 1039 ms of CPU per micro-batch on 2 threads, 317 ms passive, 211 ms on 1 thread).
# A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
