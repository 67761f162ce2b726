"""Synthetic chat rows for GPU runs: user + assistant (analysis and final), ~200-1200 tokens each.

    python bench/chat_rows.py OUT.jsonl ROWS [--seed N]

Seeded, so two machines write the same file. Used by bench/gpu/cli_runs.sh.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

WORDS = ["the", "model", "expert", "token", "weight", "gradient", "layer", "memory", "router",
         "batch", "attention", "sink", "window", "loss", "adapter", "card", "shard", "optimizer",
         "step", "chat", "harmony", "channel", "final", "analysis", "row", "pack", "length",
         "speed", "compile", "kernel"]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) + ("." if rng.random() < 0.08 else "") for _ in range(n))


def write_rows(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(rows):
            n = rng.randint(200, 1200)
            row = {"messages": [
                {"role": "user", "content": words(rng, n // 4)},
                {"role": "assistant", "thinking": words(rng, n // 4),
                 "content": words(rng, n // 2)},
            ]}
            f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("rows", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_rows(args.out, args.rows, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
