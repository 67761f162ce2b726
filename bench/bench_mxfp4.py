"""Packed MXFP4 experts for the benches: the packed model `bench_train.py` measures, and the
load measurement of a hub-layout folder with the full model's shapes.

    python bench/bench_mxfp4.py --write DIR [--model 20b|120b]   # random hub-layout folder
    python bench/bench_mxfp4.py --load DIR [--steps 2 --seq 2048]  # stream it onto the GPU

`--load` prints one JSON line: load seconds, peak host RSS (ru_maxrss: the whole process, Python and
torch included), GPU memory after the load, and a few LoRA steps on the loaded model (the loss
must be finite) - the same path `osstune run` takes for `model.experts: mxfp4`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

GIB = 1024**3


def build_packed(config: Any, dtype: Any, device: Any, attn: str, expert_lora: bool) -> Any:
    """gpt-oss with packed random experts and LoRA r=8 on q/k/v/o (+ the experts), on `device`.

    Built on the meta device, so no bf16 copy of the experts ever exists.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import GptOssForCausalLM

    from osstune.engine.trainer.model import materialize_random
    from osstune.engine.trainer.mxfp4 import fill_random_packed, pack_experts
    from osstune.engine.trainer.ops.moe_lora import add_expert_lora

    with __import__("torch").device("meta"):
        model = GptOssForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn)
    pack_experts(model)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj",
                                                             "o_proj"]))
    base = model.get_base_model()
    materialize_random(base, device, seed=0)
    fill_random_packed(base, seed=0)
    if expert_lora:
        add_expert_lora(base, r=8, alpha=16)
    return model


def write(folder: Path, size: str) -> dict[str, Any]:
    from bench_train import GPT_OSS_20B, GPT_OSS_120B, TINY
    from transformers import GptOssConfig

    from osstune.engine.trainer.hub_layout import random_hub_tensors, write_hub_checkpoint

    config = GptOssConfig(**{"120b": GPT_OSS_120B, "tiny": TINY}.get(size, GPT_OSS_20B))
    started = time.perf_counter()
    write_hub_checkpoint(folder, config.to_dict(), random_hub_tensors(config, seed=0))
    size_bytes = sum(p.stat().st_size for p in folder.iterdir())
    return {"written": str(folder), "folder_gib": round(size_bytes / GIB, 2),
            "write_s": round(time.perf_counter() - started, 1)}


def load(folder: Path, steps: int, seq: int, device_name: str = "cuda") -> dict[str, Any]:
    """Stream `folder` onto the device (rss: the whole process; target: folder + 4 GiB), then
    `steps` LoRA steps at `seq` tokens."""
    import torch

    from osstune.engine.plan.config import validate
    from osstune.engine.trainer.lora import apply_lora
    from osstune.engine.trainer.model import load_model_config, load_pretrained
    from osstune.engine.trainer.objective import CausalLMObjective, shift_labels

    cfg = validate({"model": {"id": str(folder), "experts": "mxfp4"}, "method": "lora"}, "bench")
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    started = time.perf_counter()
    model = load_pretrained(cfg, load_model_config(cfg, device), device)
    if cuda:
        torch.cuda.synchronize()
    folder_gib = sum(p.stat().st_size for p in folder.iterdir()) / GIB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result: dict[str, Any] = {
        "load_s": round(time.perf_counter() - started, 1), "peak_host_rss_gib": round(rss, 2),
        "folder_gib": round(folder_gib, 2), "rss_target_gib": round(folder_gib + 4, 2),
        "meets_rss_target": rss <= folder_gib + 4,
        "device_mem_allocated_after_load_gib": round(torch.cuda.memory_allocated() / GIB, 2)
        if cuda else None}
    print(json.dumps(result), flush=True)  # the load figures, even if the steps do not finish
    model = apply_lora(model, cfg.lora)
    model.get_base_model().gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    objective = CausalLMObjective(model, torch.bfloat16)
    ids = torch.randint(0, min(200_000, model.config.vocab_size), (1, seq), device=device)
    positions = torch.arange(seq, device=device)[None]
    targets = shift_labels(ids, positions)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(steps):
        loss_sum, n_trained, _ = objective(ids, positions, targets)
        loss = loss_sum / n_trained
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss), 4))
    result.update(losses=losses, seq=seq, device=torch.cuda.get_device_name() if cuda else "cpu",
                  peak_reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 2)
                  if cuda else None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path)
    parser.add_argument("--load", type=Path)
    parser.add_argument("--model", choices=("20b", "120b", "tiny"), default="20b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seq", type=int, default=2048)
    args = parser.parse_args(argv)
    if args.write:
        print(json.dumps(write(args.write, args.model)), flush=True)
    if args.load:
        print(json.dumps(load(args.load, args.steps, args.seq, args.device)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
