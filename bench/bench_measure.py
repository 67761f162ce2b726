"""One measurement of bench/bench_train.py: build the model of a variant, train a few steps,
report speed, memory and MFU (run in a worker subprocess; never raises for out-of-memory).

Imported through `bench_train`, which re-exports these names (bench/ is the script directory).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bench_variants import GPT_OSS_20B, GPT_OSS_120B, TINY, Variant

from osstune.engine.plan.flops import train_flops_per_token  # pip install --no-deps -e . first
from osstune.engine.plan.units import GIB


def engine_overrides(variant: Variant, seq: int, unchecked: int | None, size: str = "20b"
                     ) -> dict[str, Any] | None:
    """What repeats this measurement through the engine (bench/calibration points): the LoRA
    preset of the model `size` with these `--set` items, and which figures compare. None: not an
    engine setting."""
    if variant.offload or variant.expert_lora or (variant.unchecked < 0 and unchecked is None):
        return None
    attn = {"osstune": "auto"}.get(variant.attn, variant.attn)
    layers = unchecked if variant.unchecked < 0 else variant.unchecked
    items = ["model.init=random", f"training.sequence_len={seq}", "training.pack_len=null",
             "training.micro_batch_size=1",
             "training.gradient_accumulation_steps=1", f"model.attn_implementation={attn}",
             f"training.compile={variant.compile or 'off'}",
             f"training.unchecked_layers={layers}",
             f"training.moe_chunk_tokens={variant.moe_chunk or 'null'}"]
    # The engine always uses the chunked loss and expandable segments; the stock loss and the
    # default allocator change memory, not speed.
    same_memory = variant.loss == "chunked" and variant.expandable
    measures = ["tokens_per_s"] + (["peak_mem_gib_per_gpu"] if same_memory else [])
    if size == "120b":  # the one 120b LoRA preset keeps its experts packed
        preset = "gpt-oss-120b-lora-mxfp4"
        items += [] if variant.packed else ["model.experts=bf16"]
    else:
        preset = "gpt-oss-20b-lora-mxfp4" if variant.packed else "gpt-oss-20b-lora-1gpu"
    return {"preset": preset, "set": items, "measures": measures}


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


def timed_steps(step: Callable[[], float], steps: int, seq: int) -> dict[str, float]:
    """`steps` calls of `step` (each returns the loss, a sync point): the last loss, seconds per
    step and tokens per second of `seq`-token rows."""
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    elapsed = time.perf_counter() - t0
    return {"loss": round(loss, 4), "step_s": round(elapsed / steps, 3),
            "tokens_per_s": round(seq * steps / elapsed, 1)}


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
        _cap_memory(result, cap_gib)
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
            step()
            if index == 0 and variant.unchecked < 0 and device.type == "cuda":
                from osstune.engine.trainer.ops.checkpointing import fit_unchecked_to_card

                result["unchecked_layers"] = fit_unchecked_to_card(
                    model, seq, cap_gib, moe_chunk=variant.moe_chunk or None)
        result["warmup_s"] = round(time.perf_counter() - t0, 1)
        result.update(timed_steps(step, steps, seq))
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
        _record_peaks(result)
    result["engine"] = engine_overrides(variant, seq, result.get("unchecked_layers"), size)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def _cap_memory(result: dict[str, Any], cap_gib: float) -> None:
    import torch

    total = torch.cuda.get_device_properties(0).total_memory / GIB
    if total > cap_gib:  # e.g. an H200 standing in for an 80 GB H100
        torch.cuda.set_per_process_memory_fraction(cap_gib / total)
        result["memory_cap_gib"] = cap_gib


def _record_peaks(result: dict[str, Any]) -> None:
    import torch

    result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
    result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    result["card_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
