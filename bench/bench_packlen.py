"""Real-data throughput of the LoRA recipe on short chat data: `pack_len` 2048 vs `auto`, same run.

    python bench/bench_packlen.py --out DIR [--budget-s 72] [--layers 24] [--dry-run]

Each variant is the real engine (`python -m osstune.engine.trainer.train`, one process each, one
after the other on the same GPU: auto first, on the empty card it sizes rows for, then 2048 in the
time left; each run trains until its share of the budget ends, then stops gracefully): the
gpt-oss-20b LoRA preset with `model.init: random` (real 20b shapes; `--layers N` keeps the first
N decoder layers), on synthetic conversations of ~250-1500 tokens. The tokens/s are the engine's
own (real tokens, padding not counted) from its `step` events. Needs only torch, transformers,
peft, pydantic and this repo: no hub, no weights, no tokenizer download (a byte-level tokenizer
with the harmony special tokens is written next to the data, one token per byte).

Both variants use `compile: off` and `gradient_accumulation_steps: 1` (the preset: auto and 8) so
that two runs fit a short budget; everything else is the preset. The first 2 steps (compile,
then the unchecked-layer fit) are not timed when there are 4 or more. Results: DIR/pack2048.json,
DIR/packauto.json as soon as each run ends, then DIR/summary.json; each with the run's
`run_start` pack_len choice, per-step tokens/s and peak reserved memory, and the estimator's
figures for the same config on the same card (engine/plan/estimate.py).

`--dry-run`: the same flow on the CPU with a tiny model (checks the script, not the speed).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PRESET = "gpt-oss-20b-lora-1gpu"
STOP_S = 3.0  # after the budget: the engine ends its step and writes run_end (then: kill)
TEXT = ("the model packs short chat examples into longer rows so that fixed costs per step are "
         "shared by more tokens while attention stays inside each document boundary and the loss "
         "is normalised over trained tokens only which keeps the gradient the same")
WORDS = TEXT.split()
TINY_ARCH = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 32,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
             "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 16}


def write_tokenizer(folder: Path) -> None:
    """A byte-level BPE tokenizer (256 byte tokens, no merges) with the harmony specials."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    from osstune.engine.data.tokenizer import NAMED_SPECIALS, _bytes_to_unicode

    byte_map = _bytes_to_unicode()
    tok = Tokenizer(BPE({byte_map[b]: b for b in range(256)}, [], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for _, t in sorted(NAMED_SPECIALS.items())])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>", "model_max_length": 131072}), encoding="utf-8")


def _text(rng: random.Random, n_bytes: int) -> str:
    words: list[str] = []
    size = 0
    while size < n_bytes:
        words.append(rng.choice(WORDS))
        size += len(words[-1]) + 1
    return " ".join(words)


def write_dataset(path: Path, conversations: int, seed: int = 0) -> int:
    """Conversations of ~200-1500 tokens (one token per byte); returns their text bytes."""
    rng = random.Random(seed)
    total = 0
    with path.open("w", encoding="utf-8") as f:
        for _ in range(conversations):
            length = rng.randint(20, 1250)  # + ~250 tokens of harmony headers (byte tokens)
            user = _text(rng, length // 3)
            answer = _text(rng, length - len(user))
            total += len(user) + len(answer)
            f.write(json.dumps({"messages": [{"role": "user", "content": user},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return total


def run_config(base: Path, name: str, pack_len: Any, steps: int, args: argparse.Namespace
               ) -> Path:
    from osstune.engine.plan.config import load_config

    # The preset's file, not its name: only `osstune.engine` need be importable on the GPU host.
    cfg = load_config(str(REPO / "presets" / f"{PRESET}.yaml")).model_dump(mode="json")
    cfg.pop("requirements", None)
    cfg["name"] = name
    cfg["model"].update(init="random", tokenizer=str(base / "tokenizer"))
    if args.layers:
        cfg["model"]["architecture"] = {"num_hidden_layers": args.layers}
    cfg["training"].update(pack_len=pack_len, compile="off", gradient_accumulation_steps=1,
                           max_steps=steps, warmup_steps=0, logging_steps=1)
    cfg["dataset"].update(path=str(base / "chats.jsonl"), shuffle=True)
    cfg["output"].update(dir=str(base / name), export=False, save_steps=None)
    if args.dry_run:
        cfg["model"].update(architecture=dict(TINY_ARCH), dtype="float32",
                            attn_implementation="eager")
        cfg["distributed"]["gpus"] = 0
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def events(folder: Path) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by the timeout
    return out


def summarize(name: str, evs: list[dict[str, Any]], rc: int | None, wall_s: float
              ) -> dict[str, Any]:
    start = next((e for e in evs if e.get("type") == "run_start"), {})
    steps = [e for e in evs if e.get("type") == "step"]
    # The first step compiles; the second runs after unchecked_layers: auto changed the layers.
    timed = [s["tokens_per_s"] for s in steps[2 if len(steps) >= 4 else 1:]]
    errors = [e.get("message") for e in evs if e.get("type") == "error"]
    mem = [g["device_mem_reserved_gib"] for s in steps for g in s.get("gpus", [])]
    ds = start.get("dataset", {})
    return {
        "variant": name, "rc": rc, "wall_s": round(wall_s, 1),
        "pack_len": start.get("pack_len"), "rows": ds.get("rows"),
        "packing_efficiency": ds.get("packing_efficiency"),
        "steps": len(steps), "tokens_per_s_steps": [s["tokens_per_s"] for s in steps],
        "tokens_per_s_median": round(statistics.median(timed), 1) if timed else None,
        "mfu_last": steps[-1].get("mfu") if steps else None,
        "peak_reserved_gib": max(mem) if mem else None,
        "errors": errors, "gpu": (start.get("gpus") or [{}])[0],
    }


def estimator_view(config: Path, pack_len: int | None) -> dict[str, Any]:
    """What the estimator says for the same config on this card (free memory as the card)."""
    from osstune.engine.plan.config import load_config
    from osstune.engine.plan.estimate import estimate
    from osstune.engine.plan.hardware import GpuInfo, HardwareProfile

    cfg = load_config(str(config), [f"training.pack_len={pack_len}"] if pack_len else None)
    gpu = _gpu()
    hw = HardwareProfile(gpus=[GpuInfo(index=0, name=gpu[0], memory_total_gib=gpu[1])],
                         ram_gib=128, ram_available_gib=None, cpu_count=16, disk_free_gib=100,
                         hf_cache_free_gib=None, driver_version=None, cuda_version=None,
                         gpu_error=None, source="bench", output_dir=".") if gpu else None
    est = estimate(cfg, hw)
    return {"pack_len": est.pack_len, "why": est.pack_len_reason,
            "tokens_per_s": est.tokens_per_s, "peak_mem_gib": est.peak_mem_gib_per_gpu,
            "unchecked_layers": est.unchecked_layers}


@functools.lru_cache(maxsize=1)
def _gpu() -> tuple[str, float] | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    name, mib = out.rsplit(",", 1)
    return name.strip(), float(mib) / 1024


def run_variant(base: Path, out: Path, name: str, pack_len: Any, steps: int, timeout_s: float,
                args: argparse.Namespace) -> dict[str, Any]:
    config = run_config(base, name, pack_len, steps, args)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "OSSTUNE_CACHE_DIR": str(base / "cache")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "osstune.engine.trainer.train", "--config", str(config),
           "--no-save", "--force"]
    t0, rc = time.perf_counter(), None
    with (base / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)
        try:
            rc = proc.wait(timeout=max(timeout_s, 1))
        except subprocess.TimeoutExpired:
            proc.terminate()  # graceful: the engine ends the step and writes run_end
            try:
                rc = proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    result = summarize(name, events(base / name), rc, time.perf_counter() - t0)
    chosen = (result["pack_len"] or {}).get("length")
    try:  # the estimate at the length the engine chose, and what `osstune plan` would choose
        result["estimate"] = estimator_view(config, chosen)
        if pack_len == "auto":
            result["plan_auto"] = estimator_view(config, None)
    except Exception as e:  # the measurement matters more than the comparison
        result["estimate"] = {"error": f"{type(e).__name__}: {e}"}
    result["log_tail"] = (base / f"{name}.log").read_text(errors="replace")[-1500:]
    (out / f"{name}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    if (base / name / "events.jsonl").is_file():  # for bench/calibration_points.py
        shutil.copyfile(base / name / "events.jsonl", out / f"{name}.events.jsonl")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--work", type=Path, default=Path("/tmp/osstune-packlen"))
    p.add_argument("--budget-s", type=float, default=72.0)
    p.add_argument("--layers", type=int, default=0, help="decoder layers (0: all 24)")
    p.add_argument("--steps", type=int, default=60,
                   help="max steps per run (the budget usually ends a run first, gracefully)")
    p.add_argument("--conversations", type=int, default=500)
    p.add_argument("--dry-run", action="store_true", help="tiny model on the CPU")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    _gpu()  # once, before the runs (nvidia-smi; the estimate's card)
    write_tokenizer(args.work / "tokenizer")
    text_bytes = write_dataset(args.work / "chats.jsonl", args.conversations)
    results = []
    # auto first (the new behaviour; it sizes rows for the card's free memory, so it must find the
    # GPU empty), then 2048 in what is left; STOP_S is kept for each run's graceful stop.
    for name, pack_len, share in (("packauto", "auto", 0.55), ("pack2048", 2048, 1.0)):
        left = args.budget_s - (time.perf_counter() - t0) - STOP_S
        results.append(run_variant(args.work, args.out, name, pack_len, args.steps,
                                   (left - (STOP_S if share < 1 else 0)) * share, args))
    auto, base = (r["tokens_per_s_median"] for r in results)
    summary = {"bench": "packlen", "preset": PRESET, "layers": args.layers or 24,
               "dry_run": args.dry_run, "conversations": args.conversations,
               "text_bytes": text_bytes, "variants": results,
               "speedup_auto_vs_2048": round(auto / base, 3) if base and auto else None}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    for r in results:
        pl = r["pack_len"] or {}
        print(f"{r['variant']}: pack_len {pl.get('detail')}; {r['steps']} steps, median "
              f"{r['tokens_per_s_median']} real tok/s, peak {r['peak_reserved_gib']} GiB, "
              f"estimate {r['estimate'].get('tokens_per_s')} tok/s; rc {r['rc']}"
              + (f"; error {r['errors'][0]}" if r["errors"] else ""))
    print(f"auto vs 2048: {summary['speedup_auto_vs_2048']}x "
          f"({args.layers or 24} layers, compile off, gradient accumulation 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
