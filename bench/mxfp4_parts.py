"""The parts of bench/gpu/mxfp4.sh that run on the GPU: packed MXFP4 experts vs bf16, same run.

    python bench/mxfp4_parts.py lengths --variant osstune-lean --seqs 8192,2048 --out bf16.json
    python bench/mxfp4_parts.py packed --bf16 bf16.json --outdir DIR [--deadline EPOCH_S]

`lengths` builds one model of a bench/bench_variants.py variant and trains it at each length in turn
(one build, one process: the build and the compile caches are paid once), writing every result to
--out as soon as it is measured. `packed` does the same for the packed variant (`packed-24gb`:
experts as MXFP4 blocks/scales, capped at 23.5 GiB like a 24 GB card) and writes, part by part:

  packed.json      every packed measurement (bench_train's results layout, as bf16.json: what
                   bench/calibration_points.py reads)
  a-8192.json      packed vs bf16 at 8192 tokens (targets: <= 22 GiB, >= 0.9x bf16 tokens/s)
  b-longest.json   the longest row under the cap (16,384, then 32,768 when time is left)
  c-2048.json      packed vs bf16 at 2048 tokens
  d-numerics.json  packed == bf16 on the GPU: loss and LoRA grads of a 2-layer 20b-shaped model
                   on the same weights (attention LoRA; and + expert LoRA), and the fused CUDA
                   dequantizer equal to the eager one

Memory is peak `max_memory_reserved` per length (the cache is emptied and the peak reset before
each). `--tiny` runs the same code on the CPU with a few-MB model (eager attention: flex has no
CPU backward) so the script can be checked without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench_measure import GIB, _build, _step_fn, engine_overrides, timed_steps
from bench_variants import CAP_80GB_GIB, GPT_OSS_20B, TINY, VARIANTS, Variant

from osstune.engine.plan.flops import train_flops_per_token

BF16, PACKED = "osstune-lean", "packed-24gb"
TARGETS = {"packed_8192_max_gib": 22.0, "packed_min_speed_ratio": 0.9, "cap_gib": 23.5,
           "longest_min_tokens": 16384}


def _variant(name: str, tiny: bool) -> Variant:
    variant = VARIANTS[name]
    if tiny:  # CPU: no flex backward, no inductor
        variant = dataclasses.replace(variant, attn="eager", compile=None)
    return variant


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


class Lengths:
    """One model of `variant`, trained at one length after another."""

    def __init__(self, name: str, tiny: bool, cap_gib: float | None, log: Path) -> None:
        import torch
        import transformers

        self.name, self.tiny, self.variant = name, tiny, _variant(name, tiny)
        self.log, self.results = log, []  # every result so far, as bench_train's --out
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.cfg = TINY if tiny else GPT_OSS_20B
        self.cap_gib = self.variant.cap_gib or cap_gib
        self.info: dict[str, Any] = {
            "variant": name, "spec": dataclasses.asdict(self.variant),
            "model": "tiny" if tiny else "20b",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu"}
        if self.device.type == "cuda" and self.cap_gib:
            total = torch.cuda.get_device_properties(0).total_memory / GIB
            if total > self.cap_gib:
                torch.cuda.set_per_process_memory_fraction(self.cap_gib / total)
                self.info["memory_cap_gib"] = self.cap_gib
        started = time.perf_counter()
        torch.manual_seed(0)
        self.model, self.config = _build(self.variant, self.cfg, self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, fused=self.device.type == "cuda")
        self.build_s = round(time.perf_counter() - started, 1)

    def measure(self, seq: int, warmup: int, steps: int) -> dict[str, Any]:
        """`warmup` then `steps` timed steps at `seq` tokens; an OOM is a result, not a raise."""
        import torch

        result = {**self.info, "seq": seq, "status": "ok", "build_s": self.build_s,
                  "warmup_steps": warmup, "steps": steps}
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            vocab = 500 if self.tiny else self.cfg["vocab_size"] - 1000
            ids = torch.randint(0, vocab, (1, seq), device=self.device)
            step = _step_fn(self.variant, self.model, self.config, ids, self.optimizer)
            for _ in range(warmup):
                step()
            result["warmup_s"] = round(time.perf_counter() - started, 1)
            result.update(timed_steps(step, steps, seq))
            self._mfu(result)
        except torch.OutOfMemoryError as exc:
            result.update(status="oom", error=str(exc).splitlines()[0][:300])
        except Exception as exc:  # reported; the next length still runs
            result.update(status="error", error=f"{type(exc).__name__}: {exc}"[:600])
        self.optimizer.zero_grad(set_to_none=True)
        if cuda:
            result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
            result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
            result["card_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
        result["engine"] = engine_overrides(self.variant, seq, None)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        print(f"{self.name} @ {seq}: {result['status']} {result.get('tokens_per_s', '-')} tok/s "
              f"{result.get('peak_reserved_gib', '-')} GiB", flush=True)
        self.record(result)
        return result

    def record(self, result: dict[str, Any]) -> None:
        self.results.append(result)
        _write(self.log, {"results": self.results})

    def _mfu(self, result: dict[str, Any]) -> None:
        from osstune.engine.trainer.metrics import peak_flops

        peak = peak_flops(self.device)
        if peak:
            flops = train_flops_per_token(self.cfg, result["seq"])
            result["mfu"] = round(result["tokens_per_s"] * flops / peak, 4)


def _left(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.time()


def skipped(name: str, seq: int, why: str) -> dict[str, Any]:
    return {"variant": name, "seq": seq, "status": f"skipped ({why})"}


def run_lengths(args: argparse.Namespace) -> int:
    """bf16 (or any variant) at each --seqs length, --out rewritten after each."""
    seqs = [int(s) for s in args.seqs.split(",") if s]
    bench = Lengths(args.variant, args.tiny, args.cap_gib, args.out)
    for index, seq in enumerate(seqs):
        if index and _left(args.deadline) < args.min_left_s:
            bench.record(skipped(args.variant, seq, "budget"))
        else:
            bench.measure(seq, args.warmup, args.steps)
    return 0


def comparison(seq: int, bf16: dict[str, Any] | None, packed: dict[str, Any],
               memory_target: bool = False) -> dict[str, Any]:
    """Packed vs bf16 at one length (same run, same GPU); `memory_target`: judge the 8192 one."""
    out: dict[str, Any] = {"seq": seq, "bf16": bf16 or skipped(BF16, seq, "not measured"),
                           "packed": packed, "targets": TARGETS}
    if bf16 and bf16.get("tokens_per_s") and packed.get("tokens_per_s"):
        out["speed_ratio"] = round(packed["tokens_per_s"] / bf16["tokens_per_s"], 3)
        out["meets_speed_target"] = out["speed_ratio"] >= TARGETS["packed_min_speed_ratio"]
    if bf16 and bf16.get("peak_reserved_gib") and packed.get("peak_reserved_gib"):
        out["memory_saved_gib"] = round(bf16["peak_reserved_gib"] - packed["peak_reserved_gib"], 2)
    if memory_target and packed.get("status") == "ok" and packed.get("peak_reserved_gib"):
        out["meets_memory_target"] = (packed["peak_reserved_gib"]
                                      <= TARGETS["packed_8192_max_gib"])
    return out


def _longest(tried: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r["seq"] for r in tried if r["status"] == "ok"]
    longest = max(ok) if ok else None
    return {"cap_gib": TARGETS["cap_gib"], "tried": tried, "longest_ok": longest,
            "meets_target": bool(longest and longest >= TARGETS["longest_min_tokens"])}


def run_packed(args: argparse.Namespace) -> int:
    """Parts a, b, c, d in that order (32,768 last, when time is left), each file written when
    its part is done."""
    import torch

    bf16_file = args.bf16 if args.bf16 and args.bf16.is_file() else None
    bf16 = {r["seq"]: r for r in json.loads(bf16_file.read_text())["results"]} if bf16_file \
        else {}
    out = args.outdir
    bench = Lengths(PACKED, args.tiny, None, out / "packed.json")
    a = bench.measure(args.seq_a, args.warmup, args.steps)
    _write(out / "a-8192.json", comparison(args.seq_a, bf16.get(args.seq_a), a, True))
    longest = [int(s) for s in args.longest.split(",") if s]
    tried = [bench.measure(longest[0], 1, 1) if _left(args.deadline) > args.min_left_s
             else skipped(PACKED, longest[0], "budget")]
    _write(out / "b-longest.json", _longest(tried))
    c = bench.measure(args.seq_c, args.warmup, args.steps) if _left(args.deadline) > 8 \
        else skipped(PACKED, args.seq_c, "budget")
    _write(out / "c-2048.json", comparison(args.seq_c, bf16.get(args.seq_c), c))
    if _left(args.deadline) > 10:
        from mxfp4_numerics import numerics

        if bench.device.type == "cuda":  # the twins are not what the cap is about
            torch.cuda.set_per_process_memory_fraction(1.0)
        cfg = TINY if args.tiny else GPT_OSS_20B
        try:
            _write(out / "d-numerics.json", numerics(cfg, args.seq_d, bench.device))
        except Exception as exc:  # the 32,768 row still runs
            _write(out / "d-numerics.json", {"ok": False, "error": f"{type(exc).__name__}: "
                                             f"{exc}"[:600]})
        if bench.device.type == "cuda":
            torch.cuda.empty_cache()
            total = torch.cuda.get_device_properties(0).total_memory / GIB
            torch.cuda.set_per_process_memory_fraction(min(1.0, TARGETS["cap_gib"] / total))
    for seq in longest[1:]:
        if tried[-1]["status"] != "ok" or _left(args.deadline) < args.min_left_s:
            break
        tried.append(bench.measure(seq, 1, 1))
        _write(out / "b-longest.json", _longest(tried))
    return 0


def _line(name: str, data: dict[str, Any]) -> str:
    if "speed_ratio" in data or "packed" in data:
        p, b = data["packed"], data["bf16"]
        return (f"{name}: packed {p['status']} {p.get('tokens_per_s', '-')} tok/s "
                f"{p.get('peak_reserved_gib', '-')} GiB | bf16 {b['status']} "
                f"{b.get('tokens_per_s', '-')} tok/s {b.get('peak_reserved_gib', '-')} GiB | "
                f"ratio {data.get('speed_ratio', '-')} memory target "
                f"{data.get('meets_memory_target', '-')}")
    if "longest_ok" in data:
        rows = ", ".join(f"{r['seq']}: {r['status']} {r.get('peak_reserved_gib', '-')} GiB"
                         for r in data["tried"])
        return f"{name}: longest under {data['cap_gib']} GiB = {data['longest_ok']} ({rows})"
    if "attention_lora" in data:
        parts = [f"{k}: loss {v['loss_packed']} vs {v['loss_bf16']}, grads max rel "
                 f"{v['max_grad_rel_l2_diff']:.2e} ok={v['ok']}" if "loss_packed" in v
                 else f"{k}: {v.get('error')}"
                 for k, v in data.items() if k.startswith("attention")]
        return (f"{name}: ok={data['ok']} dequantizer exact {data.get('dequantizer_exact')}; "
                + "; ".join(parts))
    if "results" in data:
        return f"{name}: " + "; ".join(
            f"{r['seq']}: {r['status']} {r.get('tokens_per_s', '-')} tok/s "
            f"{r.get('peak_reserved_gib', '-')} GiB" for r in data["results"])
    keys = ("load_s", "peak_host_rss_gib", "folder_gib", "rss_target_gib", "losses", "error")
    return f"{name}: " + ", ".join(f"{k} {data[k]}" for k in keys if k in data)


def summary(args: argparse.Namespace) -> int:
    for path in sorted(args.outdir.glob("*.json")):
        try:
            print(_line(path.stem, json.loads(path.read_text())))
        except (ValueError, KeyError, TypeError) as e:
            print(f"{path.stem}: unreadable ({type(e).__name__}: {e})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("lengths", "packed", "summary"):
        p = sub.add_parser(name)
        p.add_argument("--tiny", action="store_true")
        p.add_argument("--deadline", type=float, default=None, help="epoch seconds")
        p.add_argument("--min-left-s", type=float, default=20.0)
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--steps", type=int, default=3)
        p.add_argument("--outdir", type=Path, default=Path("."))
    lengths = sub.choices["lengths"]
    lengths.add_argument("--variant", default=BF16, choices=sorted(VARIANTS))
    lengths.add_argument("--seqs", default="8192,2048")
    lengths.add_argument("--cap-gib", type=float, default=CAP_80GB_GIB)
    lengths.add_argument("--out", type=Path, required=True)
    packed = sub.choices["packed"]
    packed.add_argument("--bf16", type=Path, default=None)
    packed.add_argument("--seq-a", type=int, default=8192)
    packed.add_argument("--longest", default="16384,32768")
    packed.add_argument("--seq-c", type=int, default=2048)
    packed.add_argument("--seq-d", type=int, default=1024)
    args = parser.parse_args(argv)
    return {"lengths": run_lengths, "packed": run_packed, "summary": summary}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
