"""FSDP2 + CPU offload on one GPU: the one-rank proxy of the 20b full fine-tune on 24 GB cards.

    python bench/bench_offload.py --layers 8 --cap-gib 23.5 --out results.json \\
        --variant after=/path/to/pkg:4 [--variant after4=/path/to/pkg:3:4]
        [--variant before=/path/to/old/pkg:2]

Each variant runs the real engine (`osstune.engine.trainer.train` through
bench/offload_worker.py under `torchrun --nproc-per-node 1`) with PYTHONPATH set to its own copy
of the osstune package, so two versions of the code are measured in the same call on the same
machine. The run: gpt-oss-20b shapes cut to `--layers` decoder layers, random bf16 weights
(`init: random`), method full, `distributed: {gpus: 1, fsdp: true, cpu_offload: true}`,
8 micro-batches x 1 row x 2048 tokens per optimizer step (the preset's layout), activation
checkpointing, on a synthetic chat dataset whose packed rows are full. The GPU is capped with
`torch.cuda.set_per_process_memory_fraction` to `--cap-gib` (a 24 GB card: 23.5).

Per variant: the step times from events.jsonl (step 1 includes warm-up; steady = mean of the
rest), peak `device_mem_reserved`, tokens/s, the forward/backward, CPU optimizer and grad-clip
seconds of each step (step 1 part by part against the steady steps), the seconds spent pinning
host memory and compiling, the reserved memory per CUDA stream, peak host RSS, and the machine's
pinned copy bandwidth (the PCIe bound). `--main-mode` runs the engine as main did before the
offload memory work (fp32 gradient reduction, no host-register pinning): before/after in one call
on the same code tree. bench/gpu/offload.sh is the time-boxed GPU run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
WORDS = ["river", "stone", "light", "garden", "window", "paper", "music", "market", "silver",
         "winter", "morning", "engine", "valley", "bridge", "forest", "signal", "harbor",
         "lantern", "copper", "meadow", "orbit", "canvas", "thunder", "maple", "quartz"]


def write_dataset(path: Path, conversations: int, words: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(conversations):
            text = " ".join(rng.choice(WORDS) for _ in range(words))
            f.write(json.dumps({"messages": [
                {"role": "user", "content": "Summarise: " + text[: len(text) // 4]},
                {"role": "assistant", "content": text}]}) + "\n")


# --tiny: a few-MB model on CPU (gloo), to check the harness without a GPU.
TINY_ARCH = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 32,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
             "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 16}


def run_config(name: str, layers: int, steps: int, data: Path, out: Path,
               tiny: bool = False, main_mode: bool = False) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": name,
        "model": {"id": "openai/gpt-oss-20b", "init": "random", "dtype": "bfloat16",
                  "architecture": {"num_hidden_layers": layers},
                  "tokenizer": "builtin:gpt-oss-offline"},
        "method": "full",
        "distributed": {"gpus": 1, "fsdp": True, "cpu_offload": True},
        "training": {"learning_rate": 2e-5, "sequence_len": 2048, "micro_batch_size": 1,
                     "logging_steps": 1,
                     "gradient_accumulation_steps": 8, "max_steps": steps,
                     "optimizer": "adamw_torch", "gradient_checkpointing": True},
        "dataset": {"path": str(data)},
        "output": {"dir": str(out / name), "save_steps": 1000, "export": False},
    }
    if main_mode:  # gradients reduced in fp32, as main did before the offload memory work
        cfg["distributed"]["reduce_dtype"] = "float32"
    if tiny:
        cfg["model"].update(architecture={**TINY_ARCH, "num_hidden_layers": layers},
                            dtype="float32", attn_implementation="eager")
        cfg["distributed"]["backend"] = "gloo"
        cfg["training"]["sequence_len"] = 256
    return cfg


def stop(proc: subprocess.Popen[str], pid_file: Path, grace_s: float) -> str:
    """Past the time box: kill the worker (its pid file; a session of its own under torchrun),
    then torchrun, so nothing is left holding GPU or host memory for what runs next."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    proc.terminate()
    try:
        return proc.communicate(timeout=grace_s)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate(timeout=60)[1]


def first_step(result: dict[str, Any]) -> dict[str, Any]:
    """Step 1 against the steady steps, part by part (the worker's timers)."""
    parts = ("forward_backward_s", "optimizer_s", "clip_s")
    if not result.get("step_s") or not all(result.get(p) for p in parts):
        return {}
    first = {p: result[p][0] for p in parts}
    first["rest_s"] = round(result["step_s"][0] - sum(first.values()), 2)
    steady = {p: round(sum(result[p][1:]) / len(result[p][1:]), 3)
              for p in parts if len(result[p]) > 1}
    return {"first_step_parts": first, "steady_step_parts": steady}


def measure(name: str, root: str, steps: int, layers: int, args: argparse.Namespace,
            data: Path, work: Path, pass_tokens: str = "") -> dict[str, Any]:
    cfg_path = work / f"{name}.yaml"
    shutil.rmtree(work / name, ignore_errors=True)  # a fresh run every time
    cfg_path.write_text(yaml.safe_dump(run_config(name, layers, steps, data, work, args.tiny,
                                                          args.main_mode)))
    timings = work / f"{name}-timings.json"
    timings.unlink(missing_ok=True)
    Path(str(timings) + ".pid").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "OSSTUNE_BENCH_CAP_GIB": str(args.cap_gib), "OSSTUNE_BENCH_TIMINGS": str(timings),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "OSSTUNE_BENCH_PASS_TOKENS": pass_tokens,
           "OSSTUNE_BENCH_BEFORE": "1" if args.main_mode else ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
           str(HERE / "offload_worker.py"), "--config", str(cfg_path), "--no-save"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=args.timeout_s)
        code: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        err = stop(proc, Path(str(timings) + ".pid"), args.kill_grace_s)
        code = "timeout"
    result: dict[str, Any] = {"variant": name, "layers": layers, "exit_code": code,
                              "main_mode": args.main_mode,
                              "pass_tokens": pass_tokens or "default",
                              "wall_s": round(time.perf_counter() - start, 1)}
    events_file = work / name / "events.jsonl"
    events = [json.loads(line) for line in events_file.read_text().splitlines()] \
        if events_file.is_file() else []
    start_event = next((e for e in events if e["type"] == "run_start"), None)
    if start_event:
        result["total_params"] = start_event["model"]["total_params"]
    stepped = [e for e in events if e["type"] == "step"]
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(stepped, stepped[1:], strict=False)]
    if stepped:
        result["step_s"] = [round(stepped[0]["elapsed_s"], 2)] + [round(t, 2) for t in times]
        result["steady_step_s"] = round(sum(times) / len(times), 2) if times else None
        result["tokens_per_step"] = stepped[-1]["trained_tokens"]
        result["loss"] = [e["loss"] for e in stepped]
        result["peak_device_mem_reserved_gib"] = max(
            g["device_mem_reserved_gib"] for e in stepped for g in e["gpus"])
        result["peak_mem_allocated_gib"] = max(
            g["mem_allocated_gib"] for e in stepped for g in e["gpus"])
    if timings.is_file():
        result.update({k: v for k, v in json.loads(timings.read_text()).items()
                       if k != "exit_code"})
    result.update(first_step(result))
    lines = err.splitlines()
    result["engine_log"] = [line for line in lines
                            if line.startswith(("[engine]", "osstune:", "  hint"))][-30:]
    result["stderr_tail"] = lines[-25:]
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--cap-gib", type=float, default=23.5)
    p.add_argument("--variant", action="append", required=True,
                   help="NAME=PYTHONPATH_ROOT:STEPS[:LAYERS[:PASS_TOKENS]] (the root holds "
                   "the osstune package; LAYERS defaults to --layers)")
    p.add_argument("--timeout-s", type=float, default=400)
    p.add_argument("--work", default="/tmp/bench-offload")
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the harness")
    p.add_argument("--kill-grace-s", type=float, default=60,
                   help="after the time box: seconds torchrun gets to exit once its worker is "
                   "killed")
    p.add_argument("--conversations", type=int, default=400,
                   help="synthetic conversations (~500 tokens each; 4 per packed 2048-token row)")
    p.add_argument("--main-mode", action="store_true",
                   help="run the engine as main did before the offload memory work "
                   "(bench/offload_worker.py, OSSTUNE_BENCH_BEFORE)")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "long-chats.jsonl"
    # ~4 conversations of ~500 tokens per packed 2048-token row: the rows are (nearly) full.
    write_dataset(data, conversations=args.conversations, words=40 if args.tiny else 350)
    results = []
    for spec in args.variant:
        name, rest = spec.split("=", 1)
        root, *counts = rest.split(":")
        layers = int(counts[1]) if len(counts) > 1 else args.layers
        tokens = counts[2] if len(counts) > 2 else ""
        results.append(measure(name, root, int(counts[0]), layers, args, data, work, tokens))
        brief = {k: v for k, v in results[-1].items() if k not in ("stderr_tail", "engine_log")}
        print(json.dumps(brief), flush=True)
        Path(args.out).write_text(json.dumps({"layers": args.layers, "cap_gib": args.cap_gib,
                                              "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
