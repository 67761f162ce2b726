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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osstune.engine.plan.flops import train_flops_per_token  # pip install --no-deps -e . first

REPO = Path(__file__).resolve().parents[1]

GIB = 1024**3
RESULT_PREFIX = "BENCH_RESULT "

# Public config.json of openai/gpt-oss-20b.
GPT_OSS_20B: dict[str, Any] = {
    "vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880,
    "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "num_local_experts": 32, "num_experts_per_tok": 4, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "swiglu_limit": 7.0,
    "attention_bias": True, "attention_dropout": 0.0, "tie_word_embeddings": False,
    "initializer_range": 0.02, "output_router_logits": False, "router_aux_loss_coef": 0.9,
    "pad_token_id": 199999, "eos_token_id": 200002,
    "rope_parameters": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                        "truncate": False, "original_max_position_embeddings": 4096,
                        "rope_theta": 150000.0},
}
GPT_OSS_120B: dict[str, Any] = {**GPT_OSS_20B, "num_hidden_layers": 36, "num_local_experts": 128,
                                "layer_types": ["sliding_attention", "full_attention"] * 18}
# A few-MB model with the same structure, for checking the harness on CPU.
TINY: dict[str, Any] = {
    **GPT_OSS_20B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 8,
    "layer_types": ["sliding_attention", "full_attention"], "max_position_embeddings": 4096,
    "pad_token_id": 0, "eos_token_id": 1,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
}


@dataclass(frozen=True)
class Variant:
    attn: str = "eager"            # eager | flex_attention | osstune
    loss: str = "stock"            # stock (model(labels=...)) | chunked (engine.trainer.ops.loss)
    unchecked: int = 0             # decoder layers left unchecked; -1: as many as fit the card
    compile: str | None = None     # None | mlp | layer
    moe_chunk: int | None = None   # token chunk for checkpointed MoE blocks on long rows
    offload: bool = False          # checkpointed layer inputs in pinned host memory
    expandable: bool = False       # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    packed: bool = False           # MXFP4 experts kept packed (bench/bench_mxfp4.py builds it)
    expert_lora: bool = False      # + LoRA r=8 on the experts (packed variants only)
    cap_gib: float | None = None   # this variant's memory cap (else --cap-gib)


# lean: every layer checkpointed (least memory); osstune: as many layers as fit keep activations
LEAN = Variant(attn="osstune", loss="chunked", compile="mlp", moe_chunk=16384, expandable=True)
OSSTUNE = Variant(**{**asdict(LEAN), "unchecked": -1})
VARIANTS: dict[str, Variant] = {
    "eager": Variant(attn="eager"),
    "flex": Variant(attn="flex_attention"),
    "osstune": OSSTUNE,
    "osstune-lean": LEAN,
    # one lever at a time on top of stock flex, then the combinations
    "lever-loss": Variant(attn="flex_attention", loss="chunked"),
    "lever-loss+attn": Variant(attn="osstune", loss="chunked"),
    "lever-loss+attn+alloc": Variant(attn="osstune", loss="chunked", expandable=True),
    "lever-loss+attn+compile": Variant(attn="osstune", loss="chunked", compile="mlp"),
    "lever-lean+unchecked6": Variant(**{**asdict(LEAN), "unchecked": 6}),
    "lever-lean+compile-layer": Variant(**{**asdict(LEAN), "compile": "layer"}),
    "lever-osstune+compile-layer": Variant(**{**asdict(OSSTUNE), "compile": "layer"}),
    "osstune-offload": Variant(**{**asdict(OSSTUNE), "offload": True}),
    "packed-lean": Variant(**{**asdict(LEAN), "packed": True}),
    "packed-lean-eager": Variant(**{**asdict(LEAN), "packed": True, "compile": None}),
    "packed-lean+expert-lora": Variant(**{**asdict(LEAN), "packed": True, "expert_lora": True}),
    # what a 24 GB card (RTX 3090/4090: 23.99 GiB total, ~23.5 usable) runs
    "packed-24gb": Variant(**{**asdict(LEAN), "packed": True, "compile": None, "cap_gib": 23.5}),
    "packed-24gb+expert-lora": Variant(**{**asdict(LEAN), "packed": True, "compile": None,
                                         "cap_gib": 23.5, "expert_lora": True}),
}


# ----------------------------------------------------------------------------- one measurement


def engine_overrides(variant: Variant, seq: int, unchecked: int | None) -> dict[str, Any] | None:
    """What repeats this measurement through the engine (bench/calibration points): the LoRA
    preset with these `--set` items, and which figures compare. None: not an engine setting."""
    if variant.offload or (variant.unchecked < 0 and unchecked is None):
        return None
    attn = {"osstune": "auto"}.get(variant.attn, variant.attn)
    layers = unchecked if variant.unchecked < 0 else variant.unchecked
    items = ["model.init=random", f"training.sequence_len={seq}", "training.micro_batch_size=1",
             "training.gradient_accumulation_steps=1", f"model.attn_implementation={attn}",
             f"training.compile={variant.compile or 'off'}",
             f"training.unchecked_layers={layers}",
             f"training.moe_chunk_tokens={variant.moe_chunk or 'null'}"]
    # The engine always uses the chunked loss and expandable segments; the stock loss and the
    # default allocator change memory, not speed.
    same_memory = variant.loss == "chunked" and variant.expandable
    measures = ["tokens_per_s"] + (["peak_mem_gib_per_gpu"] if same_memory else [])
    return {"preset": "gpt-oss-20b-lora-1gpu", "set": items, "measures": measures}


def _build(variant: Variant, cfg_values: dict[str, Any], device: Any) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(**cfg_values)
    stock_attn = "eager" if variant.attn == "osstune" else variant.attn
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if variant.packed:
        from bench_mxfp4 import build_packed  # bench/ is on sys.path (script dir)

        model = build_packed(config, dtype, device, stock_attn, variant.expert_lora)
    else:
        with torch.device(device):
            model = GptOssForCausalLM._from_config(config, dtype=dtype,
                                                   attn_implementation=stock_attn)
            model = get_peft_model(model, LoraConfig(
                r=8, lora_alpha=16, lora_dropout=0.0,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    uses_ops = (variant.attn == "osstune" or variant.loss == "chunked" or variant.compile
                or variant.unchecked or variant.offload or variant.moe_chunk)
    if not uses_ops:
        model.get_base_model().gradient_checkpointing_enable()  # the stock user's call
    if uses_ops:
        from osstune.engine.trainer.levers import LeverPlan, apply_levers

        plan = LeverPlan(checkpointing=True, unchecked_layers=max(0, variant.unchecked),
                         fit_unchecked=False, compile=variant.compile,
                         moe_chunk_tokens=variant.moe_chunk or None,
                         attention=variant.attn == "osstune",
                         offload_activations=variant.offload)
        applied = apply_levers(model, plan)
        print("applied: " + "; ".join(applied), file=sys.stderr)
    return model, config


def _step_fn(variant: Variant, model: Any, config: Any, input_ids: Any, optimizer: Any):
    import torch

    base = model.get_base_model()
    seq = input_ids.shape[1]
    position_ids = torch.arange(seq, device=input_ids.device)[None]

    def step() -> float:
        if variant.loss == "stock":
            loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
        else:
            from osstune.engine.trainer.ops.attention import block_masks
            from osstune.engine.trainer.ops.loss import linear_cross_entropy

            masks = block_masks(config, position_ids) if variant.attn == "osstune" else None
            hidden = base.model(input_ids=input_ids, position_ids=position_ids,
                                attention_mask=masks, use_cache=False).last_hidden_state
            targets = torch.full_like(input_ids[0], -100)
            targets[:-1] = input_ids[0, 1:]
            loss_sum, n_trained = linear_cross_entropy(hidden[0], base.lm_head.weight, targets)
            loss = loss_sum / n_trained
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)  # a sync point: the step is done when this returns

    return step


def measure(name: str, variant: Variant, seq: int, warmup: int, steps: int,
            tiny: bool = False, cap_gib: float | None = None, size: str = "20b"
            ) -> dict[str, Any]:
    """Build, train `warmup + steps` steps, return the measurement (never raises for OOM)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg_values = TINY if tiny else GPT_OSS_120B if size == "120b" else GPT_OSS_20B
    import transformers

    result: dict[str, Any] = {"variant": name, "seq": seq, "spec": asdict(variant), "model": size,
                              "torch": torch.__version__, "transformers": transformers.__version__,
                              "device": torch.cuda.get_device_name() if device.type == "cuda"
                              else "cpu", "status": "ok"}
    started = time.perf_counter()
    if device.type == "cuda" and cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        if total > cap_gib:  # e.g. an H200 standing in for an 80 GB H100
            torch.cuda.set_per_process_memory_fraction(cap_gib / total)
            result["memory_cap_gib"] = cap_gib
    try:
        torch.manual_seed(0)
        model, config = _build(variant, cfg_values, device)
        result["build_s"] = round(time.perf_counter() - started, 1)
        result["experts_implementation"] = getattr(config, "_experts_implementation", None)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
        input_ids = torch.randint(0, cfg_values["vocab_size"] - 1000 if not tiny else 500,
                                  (1, seq), device=device)
        step = _step_fn(variant, model, config, input_ids, optimizer)
        t0 = time.perf_counter()
        for index in range(warmup):
            loss = step()
            if index == 0 and variant.unchecked < 0 and device.type == "cuda":
                from osstune.engine.trainer.ops.checkpointing import fit_unchecked_to_card

                result["unchecked_layers"] = fit_unchecked_to_card(model, seq, cap_gib)
        result["warmup_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        elapsed = time.perf_counter() - t0
        result.update(loss=round(loss, 4), step_s=round(elapsed / steps, 3),
                      tokens_per_s=round(seq * steps / elapsed, 1))
        from osstune.engine.trainer.metrics import peak_flops

        peak = peak_flops(device)
        if peak:
            flops = train_flops_per_token(cfg_values, seq)
            result["mfu"] = round(result["tokens_per_s"] * flops / peak, 4)
    except torch.OutOfMemoryError as exc:
        result.update(status="oom", error=str(exc).splitlines()[0][:300])
    except Exception as exc:  # reported per measurement; the other runs go on
        result.update(status="error", error=f"{type(exc).__name__}: {exc}"[:600])
    if device.type == "cuda":
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        result["card_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
    result["engine"] = engine_overrides(variant, seq, result.get("unchecked_layers"))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


# ----------------------------------------------------------------------------- orchestration


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


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--cap-gib", type=float, default=79.1,
                        help="limit each process to this much device memory on larger cards "
                        "(default: an 80 GB H100's 79.1 GiB; 0 = no limit)")
    parser.add_argument("--tiny", action="store_true", help="tiny model (harness check on CPU)")
    parser.add_argument("--model", choices=("20b", "120b"), default="20b",
                        help="gpt-oss shapes to build")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
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

    for line in _summary(runner.out, longest):
        print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"results": runner.out, "longest": longest,
                                        "budget_s": args.budget_s}, indent=1))
    return 0


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
