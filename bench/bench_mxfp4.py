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


class PooledDraw:
    """Fast random tensors for a full-size folder: slices of one pool of random bytes and one of
    N(0, 1) values, at rolling offsets (drawing 13 GB one tensor at a time with torch's CPU
    generator takes minutes; the loader reads bytes, whichever they are). Each tensor is its own
    copy: safetensors refuses tensors that share memory."""

    def __init__(self, seed: int, pool_bytes: int = 512 << 20, pool_normal: int = 32 << 20
                 ) -> None:
        import numpy as np
        import torch

        rng = np.random.default_rng(seed)
        self.bytes = torch.frombuffer(bytearray(rng.bytes(pool_bytes)), dtype=torch.uint8)
        self.values = torch.from_numpy(rng.standard_normal(pool_normal, dtype=np.float32))
        self.scaled: dict[float, Any] = {}  # std -> the pool x std in bf16
        self.offset = 0

    def _take(self, pool: Any, count: int) -> Any:
        import torch

        if count > pool.numel():
            return torch.cat([pool] * (count // pool.numel()) + [pool[: count % pool.numel()]])
        start = self.offset % (pool.numel() - count + 1)
        self.offset += 7_919_093  # a prime step: neighbouring tensors differ
        return pool[start:start + count]

    def normal(self, shape: tuple[int, ...], std: float) -> Any:
        import math

        import torch

        if std not in self.scaled:
            self.scaled[std] = (self.values * std).to(torch.bfloat16)
        return self._take(self.scaled[std], math.prod(shape)).view(shape).clone()

    def packed(self, shape_blocks: tuple[int, ...]) -> tuple[Any, Any]:
        import math

        from osstune.engine.trainer.hub_layout import RANDOM_SCALE

        blocks = self._take(self.bytes, math.prod(shape_blocks)).view(shape_blocks).clone()
        raw = self._take(self.bytes, math.prod(shape_blocks[:-1])).view(shape_blocks[:-1])
        return blocks, raw % 3 + (RANDOM_SCALE - 1)  # exponents as random_packed draws them


def write(folder: Path, size: str) -> dict[str, Any]:
    from bench_variants import GPT_OSS_20B, GPT_OSS_120B, TINY
    from transformers import GptOssConfig

    from osstune.engine.trainer.hub_layout import random_hub_tensors, write_hub_checkpoint

    config = GptOssConfig(**{"120b": GPT_OSS_120B, "tiny": TINY}.get(size, GPT_OSS_20B))
    pools = (1 << 20, 1 << 16) if size == "tiny" else (512 << 20, 32 << 20)
    started = time.perf_counter()
    write_hub_checkpoint(folder, config.to_dict(),
                         random_hub_tensors(config, draw=PooledDraw(0, *pools)))
    size_bytes = sum(p.stat().st_size for p in folder.iterdir())
    return {"written": str(folder), "folder_gib": round(size_bytes / GIB, 2),
            "write_s": round(time.perf_counter() - started, 1)}


def load(folder: Path, steps: int, seq: int, device_name: str = "cuda", attn: str = "auto"
         ) -> dict[str, Any]:
    """Stream `folder` onto the device (rss: the whole process; target: folder + 4 GiB), then
    `steps` LoRA steps at `seq` tokens."""
    import torch

    from osstune.engine.plan.config import validate
    from osstune.engine.trainer.lora import apply_lora
    from osstune.engine.trainer.model import load_model_config, load_pretrained
    from osstune.engine.trainer.objective import CausalLMObjective, shift_labels

    cfg = validate({"model": {"id": str(folder), "experts": "mxfp4", "attn_implementation": attn},
                    "method": "lora"}, "bench")
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
    parser.add_argument("--attn", default="auto", help="model.attn_implementation for the steps")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seq", type=int, default=2048)
    args = parser.parse_args(argv)
    if args.write:
        print(json.dumps(write(args.write, args.model)), flush=True)
    if args.load:
        print(json.dumps(load(args.load, args.steps, args.seq, args.device, args.attn)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
