"""LoRA training speed and memory on gpt-oss-20b shapes: stock transformers + peft vs osstune.

    python bench/bench_train.py [--devices 0,1] [--budget-s 540] [--out results.json]

Needs a CUDA GPU with torch, transformers and peft; nothing else (no weights, no hub: the model is
built from the public gpt-oss-20b shapes with random bf16 weights; speed and memory depend on
shapes, not values). Every run: LoRA r=8 / alpha 16 on q/k/v/o, activation checkpointing,
batch 1, one row of random tokens, AdamW on the adapters. Variants:

  eager     what a plain transformers + peft user gets: `attn_implementation="eager"`
            (GPT-OSS has no SDPA path), `model(input_ids, labels=...)` loss;
  flex      the same with `attn_implementation="flex_attention"`;
  osstune   engine.trainer.ops: flex attention with fp32 sinks and block-sparse document masks,
  chunked
            linear cross-entropy, MoE blocks compiled, expandable allocator segments, long rows
            through token-chunked MoE blocks;
  lever-*   osstune with one lever at a time, for the per-lever table;
  packed-*  osstune-lean with the experts kept as MXFP4 blocks/scales (`model.experts: mxfp4`,
            random packed bytes drawn on the GPU), dequantized just in time per MoE block;
            `+expert-lora` adds r=8 expert LoRA (low-rank grouped GEMMs, ops/moe_lora.py).

`--model 120b` uses the gpt-oss-120b shapes (36 layers, 128 experts) instead of 20b's.

Each measurement runs in its own subprocess (an out-of-memory run cannot disturb the next) and
prints one JSON line; the parent prints the table and writes all results to --out. With two
devices the same-GPU comparison (eager / flex / osstune at each length) runs on the first and the
longest-length search plus the lever runs on the second; with one, all run on it in that order.
Jobs that would start after --budget-s are reported as skipped.

MFU = tokens/s x training FLOPs per token / the card's dense bf16 peak, where FLOPs per token =
6 x active matmul parameters (attention, router, 4 of the experts, lm_head; 3.61B for 20b)
+ 12 x d_attn x mean attended keys per layer (T/2 on full layers, the 128-key window on sliding
ones). Recompute from activation checkpointing is not counted (model FLOPs, not hardware FLOPs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_measure import GIB, engine_overrides, measure
from bench_variants import (
    CAP_80GB_GIB,
    GPT_OSS_20B,
    GPT_OSS_120B,
    LEAN,
    OSSTUNE,
    TINY,
    VARIANTS,
    Variant,
)

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH_RESULT "

__all__ = ["GIB", "GPT_OSS_20B", "GPT_OSS_120B", "LEAN", "OSSTUNE", "RESULT_PREFIX", "TINY",
           "VARIANTS", "Runner", "Variant", "engine_overrides", "main", "measure",
           "search_longest"]


@dataclass
class Runner:
    budget_s: float
    out: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tiny: bool = False
    cap_gib: float | None = None
    size: str = "20b"

    def remaining(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def run(self, device: str | None, name: str, seq: int, warmup: int = 2, steps: int = 3,
            min_s: float = 45.0) -> dict[str, Any]:
        variant = VARIANTS[name]
        if self.remaining() < min_s:
            result = {"variant": name, "seq": seq, "status": "skipped (budget)"}
        else:
            result = self._subprocess(device, name, variant, seq, warmup, steps)
        result["gpu_index"] = device
        with self.lock:
            self.out.append(result)
        print(_row(result), flush=True)
        return result

    def _subprocess(self, device: str | None, name: str, variant: Variant, seq: int,
                    warmup: int, steps: int) -> dict[str, Any]:
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/osstune-bench-inductor")
        if variant.expandable:
            env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--seq", str(seq),
               "--warmup", str(warmup), "--steps", str(steps)] + (["--tiny"] if self.tiny else [])
        if variant.cap_gib or self.cap_gib:
            cmd += ["--cap-gib", str(variant.cap_gib or self.cap_gib)]
        cmd += ["--model", self.size]
        try:
            proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                                  timeout=max(10.0, self.remaining()))
        except subprocess.TimeoutExpired:
            return {"variant": name, "seq": seq, "status": "timeout"}
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
                if result["status"] != "ok":
                    result["stderr_tail"] = proc.stderr[-1500:]
                return result
        status = "oom" if "out of memory" in proc.stderr.lower() else "crashed"
        return {"variant": name, "seq": seq, "status": status, "returncode": proc.returncode,
                "stderr_tail": proc.stderr[-1500:]}


def search_longest(runner: Runner, device: str | None, name: str, start: int, limit: int,
                   resolution: int, known_ok: int | None = None) -> int | None:
    """Doubling from `start`, then bisection to `resolution`: the longest row that trains."""
    ok, bad = known_ok, None
    seq = start
    while runner.remaining() > 60:
        result = runner.run(device, name, seq, warmup=1, steps=1, min_s=60)
        if result["status"] == "ok":
            ok = seq
        elif result["status"].startswith("skipped"):
            break
        else:
            bad = seq
        if bad is None:
            if seq >= limit:
                break
            seq = min(seq * 2, limit)
        else:
            low = ok or 0
            if bad - low <= resolution:
                break
            seq = (low + bad) // 2 // resolution * resolution or resolution
    return ok


def _row(r: dict[str, Any]) -> str:
    cells = [f"{r['variant']:<26}", f"{r['seq']:>7}", f"{r['status'][:18]:<18}"]
    if r.get("tokens_per_s"):
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        cells += [f"{r['tokens_per_s']:>9.0f} tok/s", f"MFU {mfu:>6}"]
    else:
        cells += [f"{'-':>15}", f"{'':>10}"]
    if r.get("peak_reserved_gib") is not None:
        cells.append(f"{r['peak_reserved_gib']:>6.1f} GiB reserved")
    if r.get("unchecked_layers") is not None:
        cells.append(f"{r['unchecked_layers']} layers unchecked")
    if r.get("gpu_index") is not None:
        cells.append(f"gpu{r['gpu_index']}")
    if r.get("error"):
        cells.append(r["error"][:80])
    return "  ".join(cells)


def _summary(results: list[dict[str, Any]], longest: dict[str, int | None]) -> list[str]:
    lines = ["", "ratios (same GPU, same run):"]
    by = {(r["variant"], r["seq"], r.get("gpu_index")): r for r in results}
    for (name, seq, gpu), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if not name.startswith(("osstune", "lever")) or not r.get("tokens_per_s"):
            continue
        parts = []
        for base in ("eager", "flex"):
            b = by.get((base, seq, gpu))
            if b and b.get("tokens_per_s"):
                parts.append(f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}x {base} speed, "
                             f"{r['peak_reserved_gib'] - b['peak_reserved_gib']:+.1f} GiB")
            elif b:
                parts.append(f"{base}: {b['status']}")
        if parts:
            lines.append(f"  {name} @ {seq}: " + "; ".join(parts))
    for name, seq in longest.items():
        lines.append(f"longest row that trains, {name}: {seq if seq else 'none tried/ok'}")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default=None,
                        help="CUDA indices, e.g. 0,1 (default: all visible, at most two)")
    parser.add_argument("--seqs", default="2048,8192")
    parser.add_argument("--compare", default="eager,flex,osstune-lean,osstune")
    parser.add_argument("--levers", default="lever-loss,lever-loss+attn,lever-loss+attn+alloc,"
                        "lever-loss+attn+compile,osstune-lean,lever-lean+compile-layer",
                        help="variants measured at the largest --seqs, '' for none")
    parser.add_argument("--search", default="osstune,flex",
                        help="variants whose longest trainable row is searched, '' for none")
    parser.add_argument("--search-start", type=int, default=65536)
    parser.add_argument("--search-limit", type=int, default=131072)
    parser.add_argument("--budget-s", type=float, default=540.0)
    parser.add_argument("--out", type=Path, default=None, help="write all results as JSON")
    parser.add_argument("--cap-gib", type=float, default=CAP_80GB_GIB,
                        help="limit each process to this much device memory on larger cards "
                        "(default: an 80 GB H100's 79.1 GiB; 0 = no limit)")
    parser.add_argument("--tiny", action="store_true", help="tiny model (harness check on CPU)")
    parser.add_argument("--model", choices=("20b", "120b"), default="20b",
                        help="gpt-oss shapes to build")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    if args.worker:
        result = measure(args.worker, VARIANTS[args.worker], args.seq, args.warmup, args.steps,
                         tiny=args.tiny, cap_gib=args.cap_gib or None, size=args.model)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    devices = _devices(args.devices)
    runner = Runner(budget_s=args.budget_s, tiny=args.tiny, cap_gib=args.cap_gib or None,
                    size=args.model)
    seqs = [int(s) for s in args.seqs.split(",") if s]
    compare = [v for v in args.compare.split(",") if v]
    levers = [v for v in args.levers.split(",") if v]
    searched = [v for v in args.search.split(",") if v]
    for name in compare + levers + searched:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    print(f"devices: {devices or ['cpu']}  budget {args.budget_s:.0f}s", flush=True)
    longest = _run_queues(runner, devices, args, seqs, compare, levers, searched)
    for line in _summary(runner.out, longest):
        print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"results": runner.out, "longest": longest,
                                        "budget_s": args.budget_s}, indent=1))
    return 0


def _run_queues(runner: Runner, devices: list[str], args: argparse.Namespace, seqs: list[int],
                compare: list[str], levers: list[str], searched: list[str]
                ) -> dict[str, int | None]:
    """The compare queue, then the levers and the searches (on the second device when there
    is one); returns the longest trainable row of each searched variant."""
    longest: dict[str, int | None] = {}

    lever_jobs = [(name, max(seqs)) for name in levers]
    lever_lock = threading.Lock()

    def take_levers(device: str | None) -> None:
        while True:
            with lever_lock:
                if not lever_jobs:
                    return
                name, seq = lever_jobs.pop(0)
            runner.run(device, name, seq)

    def compare_queue(device: str | None) -> None:
        for seq in seqs:
            for name in compare:
                runner.run(device, name, seq)
        take_levers(device)

    def search_queue(device: str | None) -> None:
        for index, name in enumerate(searched):
            if name.startswith(("osstune", "packed")):
                longest[name] = search_longest(runner, device, name, args.search_start,
                                               args.search_limit, resolution=8192)
            else:  # stock paths: one probe above the longest compared length
                known = max(seqs) if any(r["variant"] == name and r["status"] == "ok"
                                         and r["seq"] == max(seqs) for r in runner.out) else None
                longest[name] = search_longest(runner, device, name, 2 * max(seqs),
                                               2 * max(seqs), resolution=2 * max(seqs),
                                               known_ok=known)
            if index == 0:
                take_levers(device)  # the levers before the stock probes
        take_levers(device)  # (no search asked: the levers start at once)

    if len(devices) >= 2:
        threads = [threading.Thread(target=compare_queue, args=(devices[0],)),
                   threading.Thread(target=search_queue, args=(devices[1],))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        device = devices[0] if devices else None
        compare_queue(device)
        search_queue(device)
    return longest


def _devices(spec: str | None) -> list[str]:
    if spec:
        return [d.strip() for d in spec.split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()][:2]


if __name__ == "__main__":
    sys.exit(main())
