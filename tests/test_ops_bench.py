"""bench/bench_train.py: the harness on a tiny model (CPU) and its FLOPs accounting."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from osstune.engine.plan import flops

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_train.py"


@pytest.fixture(scope="module")
def bench():
    # bench_train imports its sibling modules as a script does: bench/ on sys.path
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = module  # dataclasses look their module up while executing
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH.parent))
        for name in ("bench_train", "bench_measure", "bench_variants"):
            sys.modules.pop(name, None)


def test_active_parameters_and_flops_of_gpt_oss_20b(bench):
    # 3.6B active parameters (OpenAI's model card) = layers + lm_head, embeddings excluded
    assert flops.active_matmul_params(bench.GPT_OSS_20B) == pytest.approx(3.607e9, rel=1e-3)
    assert flops.mean_attended_keys(4, None) == 2.5
    assert flops.mean_attended_keys(8192, 128) == pytest.approx(128 - 128 * 127 / 2 / 8192)
    per_token = flops.train_flops_per_token(bench.GPT_OSS_20B, 8192)
    attention = 12 * 4096 * (12 * 8192.5 / 2 + 12 * flops.mean_attended_keys(8192, 128))
    assert per_token == pytest.approx(6 * 3.6071e9 + attention, rel=1e-4)
    # the engine counts with the same formula from the model's config
    from transformers import GptOssConfig

    config = GptOssConfig(**bench.GPT_OSS_20B).to_dict()
    assert flops.train_flops_per_token(config, 8192) == per_token


def test_stock_and_chunked_loss_paths_train_identically_on_cpu(bench):
    stock = bench.measure("eager", bench.VARIANTS["eager"], 48, warmup=1, steps=1, tiny=True)
    chunked = bench.measure("eager+chunked-loss", bench.Variant(attn="eager", loss="chunked"),
                            48, warmup=1, steps=1, tiny=True)
    assert stock["status"] == "ok" and chunked["status"] == "ok", (stock, chunked)
    assert stock["tokens_per_s"] > 0 and "mfu" not in stock  # no peak FLOPs known for a CPU
    assert stock["engine"]["measures"] == ["tokens_per_s"]
    # same seed, data and updates: the loss after two AdamW steps agrees (fp32 on CPU)
    assert chunked["loss"] == pytest.approx(stock["loss"], abs=2e-4)


def test_out_of_memory_and_errors_are_reported_not_raised(bench):
    bad = bench.Variant(attn="no-such-attention")
    result = bench.measure("bad", bad, 16, warmup=1, steps=1, tiny=True)
    assert result["status"] == "error" and "no-such-attention" in result["error"]


def test_results_carry_what_a_calibration_point_needs(bench, tmp_path):
    from osstune.engine.plan.calibration import check_point, points_from_bench

    lean = bench.engine_overrides(bench.VARIANTS["osstune-lean"], 8192, None)
    assert lean["set"] == [
        "model.init=random", "training.sequence_len=8192", "training.pack_len=null",
        "training.micro_batch_size=1",
        "training.gradient_accumulation_steps=1", "model.attn_implementation=auto",
        "training.compile=mlp", "training.unchecked_layers=0", "training.moe_chunk_tokens=16384"]
    assert lean["measures"] == ["tokens_per_s", "peak_mem_gib_per_gpu"]
    assert bench.engine_overrides(bench.VARIANTS["flex"], 2048, None)["measures"] == [
        "tokens_per_s"]  # the stock loss: speed compares, memory does not
    fitted = bench.engine_overrides(bench.VARIANTS["osstune"], 8192, 21)
    assert "training.unchecked_layers=21" in fitted["set"]
    assert bench.engine_overrides(bench.VARIANTS["osstune"], 8192, None) is None
    packed = bench.engine_overrides(bench.VARIANTS["packed-24gb"], 8192, None)
    assert packed["preset"] == "gpt-oss-20b-lora-mxfp4" and "training.compile=off" in packed["set"]
    assert bench.engine_overrides(bench.VARIANTS["packed-24gb+expert-lora"], 8192, None) is None
    big = bench.engine_overrides(bench.VARIANTS["packed-lean-eager"], 8192, None, "120b")
    assert big["preset"] == "gpt-oss-120b-lora-mxfp4" and "model.experts=bf16" not in big["set"]
    big_bf16 = bench.engine_overrides(bench.VARIANTS["osstune-lean"], 2048, None, "120b")
    assert big_bf16["preset"] == "gpt-oss-120b-lora-mxfp4" and "model.experts=bf16" in \
        big_bf16["set"]
    result = {"variant": "osstune-lean", "seq": 8192, "status": "ok", "device": "NVIDIA H200",
              "card_gib": 139.8, "memory_cap_gib": 79.1, "tokens_per_s": 11701.9,
              "peak_reserved_gib": 42.68, "engine": lean}
    path = tmp_path / "run.json"
    path.write_text(__import__("json").dumps({"results": [result]}))
    [point] = points_from_bench(path)
    errors = {r.measure: r.error for r in check_point(point)}
    assert abs(errors["peak_mem_gib_per_gpu"]) < 0.1 and abs(errors["tokens_per_s"]) < 0.25
