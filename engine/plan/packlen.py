"""`training.pack_len: auto`: the packed row length, chosen from memory and speed.

Torch-free: the rule only. The model it judges with (the estimator's peak memory and tokens/s at a
given row length) comes from engine/plan/estimate.py `pack_len_for`, which is the one function
that resolves `pack_len` for the engine, `osstune plan`/`presets`, the pre-flight and the wizard.

Short examples packed into longer rows train faster per token: the fixed costs of a micro-batch
(kernel launches, host syncs, the optimizer, dequantizing packed experts) are shared by more
tokens, while attention stays within each example (README, performance section: 2048-token rows
of short chat ~8,000-10,300 real tok/s, 8192-token rows ~16,800, one H200;
bench/calibration/h200-osstune-run-lora2048.json, h200-osstune-run-lora8192-long.json). The gain
flattens, and on one card a longer row leaves less room for unchecked layers (more recompute), so
the rule takes the *shortest* length within `KNEE` of the fastest one that fits, not the longest.
With `unchecked_layers: auto` the speeds are those of every layer checkpointed (the floor): the
spare memory goes to unchecked layers afterwards, and whole layers fitting or not at each length
do not make the choice jump back and forth between nearby card sizes (a larger card never gets
shorter rows):

1. candidates: `sequence_len`, then the powers of two above it, up to `MAX_PACK_LEN`: rows of
   those lengths were measured to start promptly (2048 to 131,072 tokens), while the first step
   at 12,288 and 14,336 tokens stalled for minutes compiling the attention mask on an H200
   (bench/results/2026-11-29-h200-pack12288-mask-compile-stall.json; the engine now builds such
   masks eagerly, but no run has measured those lengths since);
2. memory: the all-checkpointed peak at that length plus the CUDA context must stay within
   `MEMORY_FRACTION` of the card as `sizing_card_gib` sees it (its total less a reserve, or its
   free memory when less: one rule for the plan and the engine);
3. dataset: at most the length that still gives `MIN_STEPS_PER_EPOCH` optimizer steps of full
   rows per epoch;
4. speed: among the lengths left, the shortest whose estimated tokens/s is within `KNEE` of the
   best.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

GRANULE = 1024          # dataset_cap rounds down to it (the loss chunk, engine/trainer/ops/loss.py)
MAX_PACK_LEN = 131_072  # longest row measured under 80 GB (bench/calibration/h200-lean-131072.json)
KNEE = 0.95             # "the plateau": within 5 % of the fastest length that fits
MEMORY_FRACTION = 0.85  # leaves the verdict's 10 % headroom plus the estimator's error
MIN_STEPS_PER_EPOCH = 8

# Why the length was chosen (run_start, `osstune plan`, the wizard).
REASONS = ("set", "sequence_len", "packing off", "cpu", "no card", "no estimate",
           "memory bound", "speed knee", "dataset", "longest measured", "resumed")


@dataclass(frozen=True)
class PackLen:
    length: int
    reason: str  # one of REASONS
    why: str  # one line, e.g. "auto: speed knee, ~16,767 tok/s estimated, ..."

    @property
    def detail(self) -> str:
        return f"{self.length:,} tokens ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PackLen:
        return cls(int(d["length"]), str(d["reason"]), str(d["why"]))


def candidates(sequence_len: int, limit: int = MAX_PACK_LEN) -> list[int]:
    """sequence_len, then the powers of two above it, up to `limit`."""
    out, n = [sequence_len], 1 << max(sequence_len, 1).bit_length()
    while n <= limit:
        out.append(n)
        n *= 2
    return out


def _largest_fitting(sequence_len: int, fits: Callable[[int], bool], limit: int) -> int | None:
    """The longest candidate (sequence_len or a power of two above it) up to `limit` that fits."""
    if not fits(sequence_len):
        return None
    best = sequence_len
    for n in candidates(sequence_len, limit)[1:]:  # memory grows with the length
        if not fits(n):
            break
        best = n
    return best


def choose(sequence_len: int, fits: Callable[[int], bool], speed: Callable[[int], float],
           dataset_cap: int | None, basis: str = "") -> PackLen:
    """The packed row length for `pack_len: auto` (the rule in the module docstring).

    `fits(L)`: the run's memory floor at rows of L fits the card with headroom; `speed(L)`: its
    estimated tokens/s; `dataset_cap`: the longest row the dataset fills (None: not known);
    `basis`: what the speeds assume, said after them (e.g. " with every layer checkpointed").
    """
    limit = MAX_PACK_LEN if dataset_cap is None else max(sequence_len,
                                                         min(MAX_PACK_LEN, dataset_cap))
    top = _largest_fitting(sequence_len, fits, limit)
    if top is None:
        return PackLen(sequence_len, "memory bound",
                       "auto: no room for rows longer than sequence_len on this card")
    grid = candidates(sequence_len, top)  # top is the last of them
    speeds = {n: speed(n) for n in grid}
    best = max(speeds.values())
    fastest = min(n for n, v in speeds.items() if v == best)
    pick = min(n for n in grid if speeds[n] >= KNEE * best)
    est = f"~{speeds[pick]:,.0f} tok/s estimated{basis}"
    if pick < top:
        than = "the fastest that fits" if pick == fastest else \
            f"within {1 - KNEE:.0%} of the fastest that fits ({fastest:,}: ~{best:,.0f} tok/s)"
        return PackLen(pick, "speed knee", f"auto: speed knee, {est}, {than}")
    reach = candidates(sequence_len, limit)[-1]  # the longest candidate allowed
    if dataset_cap is not None and top == reach and limit < MAX_PACK_LEN:
        return PackLen(pick, "dataset", f"auto: the longest row the dataset fills "
                       f"{MIN_STEPS_PER_EPOCH} optimizer steps per epoch with, {est}")
    if top >= MAX_PACK_LEN:
        return PackLen(pick, "longest measured", f"auto: the longest row measured to train, {est}")
    return PackLen(pick, "memory bound",
                   f"auto: the longest that fits the card with headroom, {est}")


def dataset_cap(tokens_total: int | None, rows_per_step: int) -> int | None:
    """The longest row the dataset fills MIN_STEPS_PER_EPOCH optimizer steps with."""
    if not tokens_total:
        return None
    return int(tokens_total // (rows_per_step * MIN_STEPS_PER_EPOCH) // GRANULE * GRANULE)
