"""The training process (imports torch): model, levers, loop, checkpoints, export."""

import os

# Before torch loads its OpenMP runtime (read once, at load): threads that wait between parallel
# regions sleep instead of spinning. A CPU run of a small model is thousands of short regions; on
# a shared or busy machine the spinning threads took 3-5x the CPU time of the work (README,
# "demo-speed": the demo's 260 CPU-seconds before, 77 after).
# A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
