"""Turn a measurement into estimator calibration points (bench/calibration/*.json).

    python bench/calibration_points.py RESULTS.json                      # bench/bench_train.py
    python bench/calibration_points.py OUT/events.jsonl --preset gpt-oss-20b-lora-1gpu \\
        --set model.init=random --name h100-my-run                       # an engine run
    python bench/calibration_points.py after.events.jsonl --preset gpt-oss-20b-fft-fsdp2-offload \\
        --set model.init=random --set model.architecture.num_hidden_layers=4 \\
        --set distributed.gpus=1 --memory-cap-gib 23.5 --name h200-offload-proxy-4layers
                                                 # bench/gpu/offload.sh's run (--out: a scratch dir)

Each point is one file; tests/test_estimate.py checks the estimate against every file there
(+-10 % memory and host RAM, +-25 % tokens/s). Torch-free.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osstune.engine.plan.calibration import check_point, point_from_events, points_from_bench

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a bench results JSON or an events.jsonl")
    parser.add_argument("--out", type=Path, default=HERE / "calibration")
    parser.add_argument("--preset", help="events.jsonl: the preset the run started from")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="events.jsonl: the --set items of the run")
    parser.add_argument("--name", help="events.jsonl: the point's name (file name)")
    parser.add_argument("--memory-cap-gib", type=float,
                        help="events.jsonl: the run capped its GPU to this many GiB "
                        "(bench/offload_worker.py: torch.cuda.set_per_process_memory_fraction)")
    args = parser.parse_args(argv)
    if args.source.suffix == ".jsonl":
        if not (args.preset and args.name):
            parser.error("an events.jsonl needs --preset and --name")
        points = [point_from_events(args.source, args.name, args.preset, args.overrides)]
        if args.memory_cap_gib:
            points[0]["hardware"]["memory_cap_gib"] = args.memory_cap_gib
    else:
        points = points_from_bench(args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    for point in points:
        (args.out / f"{point['name']}.json").write_text(json.dumps(point, indent=1) + "\n")
        for r in check_point(point):
            print(f"{point['name']}: {r.measure} measured {r.measured:,.1f} "
                  f"estimated {r.estimated:,.1f} ({r.error:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
