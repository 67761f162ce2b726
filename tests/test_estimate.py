"""The estimator (engine/plan/estimate.py) against every measurement in bench/calibration/."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest

from osstune.engine.plan.calibration import (
    check_point,
    load_points,
    point_from_events,
    superseded_measures,
)
from osstune.engine.plan.config import load_config, load_preset
from osstune.engine.plan.estimate import DatasetFacts, estimate
from osstune.engine.plan.hardware import GpuInfo, load_profile, probe, profile_to_dict
from osstune.engine.plan.memory import (
    DEQUANTIZED,
    LM_HEAD_GRAD,
    MemoryInputs,
    activation_terms,
    gpu_terms,
    unchecked_extra_bytes_per_token,
)
from osstune.engine.plan.shapes import model_shapes
from osstune.engine.plan.storage import cached_models
from tests.engine_fixtures import HUB_20B_GIB

REPO = Path(__file__).resolve().parents[1]
POINTS = load_points(REPO / "bench" / "calibration")
TOLERANCE = {"peak_mem_gib_per_gpu": 0.10, "host_ram_gib": 0.10, "tokens_per_s": 0.25}
LORA = "gpt-oss-20b-lora-1gpu"
H100 = REPO / "tests" / "profiles" / "1xh100-80gb.json"


def _live(point: dict) -> list[str]:
    return [m for m, v in point["measured"].items()
            if v is not None and m not in superseded_measures(point)]


LIVE = [p for p in POINTS if _live(p)]


def test_calibration_points_cover_the_measurements() -> None:
    measures = [m for p in POINTS for m in _live(p)]
    assert len(POINTS) >= 20
    assert measures.count("peak_mem_gib_per_gpu") >= 15
    assert measures.count("tokens_per_s") >= 20
    for point in POINTS:
        source = point["source"].split(" ")[0].rstrip(",")
        assert source.startswith("issue") or (REPO / source).is_file(), point["name"]


def test_superseded_points_stay_named_and_out_of_the_fit() -> None:
    old = [p for p in POINTS if p.get("superseded")]
    assert {p["name"] for p in old} >= {"h200-engine-fft-offload-2gpu",
                                        "h200-fft-offload-proxy-8layers"}
    for point in old:
        block = point["superseded"]
        assert len(block["by"]) >= 7 and int(block["by"], 16) >= 0, point["name"]  # a commit
        assert len(block["why"]) > 20, point["name"]
        if "measures" not in block:  # the whole point: none of it checked or fitted
            assert check_point(point) == [], point["name"]
    # a whole point superseded: nothing of it is checked; a named measure: only that one is out
    whole = next(p for p in POINTS if p["name"] == "h200-engine-fft-offload-2gpu")
    assert check_point(whole) == []
    assert {r.measure for r in check_point(whole, superseded=True)} == {
        "peak_mem_gib_per_gpu", "tokens_per_s", "host_ram_gib"}
    merged = next(p for p in POINTS if p["name"] == "h200-fft-offload-proxy-8layers-merged")
    assert {r.measure for r in check_point(merged)} == {"peak_mem_gib_per_gpu", "host_ram_gib"}


@pytest.mark.parametrize("point", LIVE, ids=[p["name"] for p in LIVE])
def test_every_measured_point_is_within_tolerance(point: dict) -> None:
    results = check_point(point)
    assert results
    lines = [f"{r.name}: {r.measure} measured {r.measured:,.1f} estimated {r.estimated:,.1f} "
             f"({r.error:+.1%})" for r in results]
    print("\n".join(lines))
    for r, line in zip(results, lines, strict=True):
        assert abs(r.error) <= TOLERANCE[r.measure], line


def test_parameter_counts_match_the_engine() -> None:
    # run_start of the H100 engine run: total_params 20,918,738,496 with 3,981,312 LoRA params
    s = model_shapes("openai/gpt-oss-20b", {})
    lora = s.lora_params(8, ["q_proj", "k_proj", "v_proj", "o_proj"], [])
    assert lora == 3_981_312
    assert s.total_params() + lora == 20_918_738_496
    assert s.active_params() + lora == 4_191_422_016
    assert round(s.mxfp4_checkpoint_bytes() / 1e9, 1) == 13.8  # the hub's 13.8 GB
    big = model_shapes("openai/gpt-oss-120b", {})
    assert round(big.total_params() / 1e9, 1) == 116.8


def test_the_terms_add_up_and_scale_with_the_config() -> None:
    base = estimate(load_config(LORA, ["training.unchecked_layers=0"]))
    assert base.peak_mem_gib_per_gpu == pytest.approx(sum(base.gpu_terms.values()), abs=0.01)
    assert base.host_ram_gib == pytest.approx(sum(base.host_terms.values()), abs=0.01)
    assert base.disk_gib == pytest.approx(sum(base.disk_terms.values()), abs=0.01)
    longer = estimate(load_config(LORA, ["training.unchecked_layers=0",
                                         "training.sequence_len=16384"]))
    batch = estimate(load_config(LORA, ["training.unchecked_layers=0",
                                        "training.micro_batch_size=8"]))
    rank = estimate(load_config(LORA, ["training.unchecked_layers=0", "lora.r=256"]))
    unchecked = estimate(load_config(LORA, ["training.unchecked_layers=12"]))
    assert longer.peak_mem_gib_per_gpu > base.peak_mem_gib_per_gpu + 2
    assert batch.peak_mem_gib_per_gpu == pytest.approx(longer.peak_mem_gib_per_gpu, abs=0.01)
    assert rank.gpu_terms["adapters + gradients + AdamW"] > 1.5
    assert unchecked.peak_mem_gib_per_gpu > base.peak_mem_gib_per_gpu + 3
    assert estimate(load_config(LORA, ["training.sequence_len=16384"])).tokens_per_s \
        > base.tokens_per_s


def test_fsdp_shards_and_offload_moves_states_to_the_host() -> None:
    fft4 = estimate(load_preset("gpt-oss-20b-fft-fsdp2"))
    fft8 = estimate(load_config("gpt-oss-20b-fft-fsdp2", ["gpus=8"]))
    assert fft4.gpu_terms["AdamW states (sharded)"] == pytest.approx(
        2 * fft8.gpu_terms["AdamW states (sharded)"], rel=1e-3)
    off = estimate(load_preset("gpt-oss-20b-fft-fsdp2-offload"))
    assert "AdamW states (sharded)" not in off.gpu_terms
    assert off.host_terms["offloaded parameters, gradients, AdamW"] > 150


def test_unchecked_auto_fills_the_card_and_reports_the_floor() -> None:
    cfg = load_config(LORA, ["training.sequence_len=8192", "training.pack_len=null"])
    card = load_profile(H100)
    est = estimate(cfg, card)
    floor = estimate(load_config(LORA, ["training.sequence_len=8192", "training.pack_len=null",
                                        "training.unchecked_layers=0"]), card)
    assert est.min_peak_mem_gib_per_gpu == floor.peak_mem_gib_per_gpu
    assert 0 < est.unchecked_layers <= 24
    assert floor.peak_mem_gib_per_gpu < est.peak_mem_gib_per_gpu <= 79.65 - 4 + 1.4
    small = dataclasses.replace(card, gpus=[GpuInfo(0, "NVIDIA RTX A6000", 47.99)])
    assert estimate(cfg, small).unchecked_layers < est.unchecked_layers


def test_unchecked_layer_term_matches_the_measured_delta() -> None:
    # 21 layers unchecked at 8192 tokens: +27.7 GiB allocated (70.35 - 42.64, bench run 2)
    s, lora = model_shapes("openai/gpt-oss-20b", {}), ("q_proj", "k_proj", "v_proj", "o_proj")
    per_token = unchecked_extra_bytes_per_token(s, lora_targets=lora)
    assert 21 * 8192 * per_token / 1024**3 == pytest.approx(27.7, rel=0.03)
    # 24 layers unchecked at 20,480 tokens, MoE blocks chunked (only their input kept): 95.81
    # GiB reserved after a fully checkpointed first step at 47.87 (the H200 CLI run, issue 13)
    chunked = unchecked_extra_bytes_per_token(s, lora_targets=lora, chunked=True)
    assert 24 * 20480 * chunked / 1024**3 == pytest.approx(95.81 - 47.87, rel=0.05)
    assert chunked < 0.7 * per_token


def test_packed_experts_keep_the_weights_small() -> None:
    s = model_shapes("openai/gpt-oss-20b", {})
    common = dict(shapes=s, dtype_bytes=2, lora_params=3_981_312, fsdp=False, offload=False,
                  world_size=1, tokens=2048, checkpointing=True, compiled=True, moe_chunk=16384,
                  pretrained=True, processes_per_node=1)
    bf16 = sum(gpu_terms(MemoryInputs(packed_experts=False, **common), 0).values())
    packed = gpu_terms(MemoryInputs(packed_experts=True, **common), 0)
    assert packed["weights"] == pytest.approx(13.76e9 / 1024**3, rel=0.01)
    assert sum(packed.values()) < bf16 - 20
    # At 2048 tokens the loss chunk's phase is the larger one: no dequantized weights in it
    assert "loss chunk (fp32 logits + grad)" in packed and DEQUANTIZED not in packed
    # At 8192 a layer's backward is: one projection dequantized at a time, the larger (gate_up,
    # 32 experts x 5760 x 2880 bf16), never both
    long = gpu_terms(MemoryInputs(packed_experts=True, **{**common, "tokens": 8192,
                                                          "compiled": False}), 0)
    assert long[DEQUANTIZED] == pytest.approx(32 * 5760 * 2880 * 2 / 1024**3, rel=1e-6)
    assert "loss chunk (fp32 logits + grad)" not in long
    assert sum(long.values()) > sum(packed.values())


def test_the_peak_is_the_larger_of_the_loss_and_the_layer_backward() -> None:
    s = model_shapes("openai/gpt-oss-20b", {})
    base = MemoryInputs(shapes=s, dtype_bytes=2, packed_experts=False, lora_params=3_981_312,
                        fsdp=False, offload=False, world_size=1, tokens=2048, checkpointing=True,
                        compiled=True, moe_chunk=16384, pretrained=False, processes_per_node=1,
                        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    for tokens in (1024, 2048, 4096, 8192, 65536):  # one phase or the other, never both
        terms = activation_terms(dataclasses.replace(base, tokens=tokens), 0)
        assert ("loss chunk (fp32 logits + grad)" in terms) != ("recompute of one layer" in terms)
    short, long = (activation_terms(dataclasses.replace(base, tokens=n), 0) for n in (2048, 16384))
    assert "loss chunk (fp32 logits + grad)" in short and "recompute of one layer" in long
    # a full fine-tune's loss phase holds lm_head's fp32 gradient (the chunked loss trains it)
    full = activation_terms(dataclasses.replace(base, lora_params=0), 0)
    lora = activation_terms(base, 0)
    assert LM_HEAD_GRAD not in lora and full[LM_HEAD_GRAD] > 0
    assert sum(full.values()) > sum(lora.values())


def test_disk_counts_what_the_run_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    lora = estimate(load_preset(LORA))
    download = lora.disk_terms["model download (not in the HF cache)"]
    assert download == pytest.approx(HUB_20B_GIB, abs=0.01)
    assert "export (safetensors)" not in lora.disk_terms  # the adapter, not a merged model
    assert lora.disk_gib < 14
    fft = estimate(load_preset("gpt-oss-20b-fft-fsdp2"))
    assert fft.disk_terms["checkpoints (3 x weights + AdamW)"] == pytest.approx(3 * 116.9, rel=0.01)
    assert fft.disk_terms["export (safetensors)"] == pytest.approx(38.99, rel=0.01)
    no_export = estimate(load_config("gpt-oss-20b-fft-fsdp2", ["output.export=false",
                                                               "output.keep_last=1"]))
    assert "export (safetensors)" not in no_export.disk_terms
    assert no_export.disk_terms["checkpoints (2 x weights + AdamW)"] > 200
    # A machine with the weights in its HF cache downloads nothing (the probe looks it up and
    # `osstune doctor --json` writes the list, so a profile file carries it).
    snap = tmp_path / "models--openai--gpt-oss-20b" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}))
    (snap / "model-1.safetensors").write_bytes(b"x")
    assert cached_models() == []  # a shard is missing: not cached
    (snap / "model-2.safetensors").write_bytes(b"x")
    assert cached_models() == ["openai/gpt-oss-20b"]
    probed = probe(str(tmp_path), nvml=None)
    assert probed.hf_cached_models == ["openai/gpt-oss-20b"]
    assert "model download (not in the HF cache)" not in estimate(load_preset(LORA),
                                                                 probed).disk_terms
    saved = tmp_path / "me.json"
    saved.write_text(json.dumps(profile_to_dict(probed)))
    assert load_profile(saved).hf_cached_models == ["openai/gpt-oss-20b"]
    assert estimate(load_preset(LORA), load_profile(saved)).disk_gib < 1


def test_time_for_the_dataset() -> None:
    facts = DatasetFacts(tokens_total=10_000_000, examples=20_000, packing_efficiency=0.9)
    cfg = load_config(LORA, ["training.num_epochs=2"])
    est = estimate(cfg, load_profile(H100), dataset=facts)
    assert est.train_tokens == 20_000_000
    assert est.time_s == pytest.approx(est.train_tokens / est.tokens_per_s, rel=1e-3)
    steps = estimate(load_config(LORA, ["max_steps=10"]), load_profile(H100))
    assert steps.pack_len > 2048  # the preset's pack_len: auto
    assert steps.train_tokens == 10 * 8 * steps.pack_len


def test_what_cannot_be_modeled_says_so() -> None:
    odd = load_config(LORA, ["model.architecture.num_mystery_units=3"])
    est = estimate(odd)
    assert not est.ok and est.problem.startswith("no estimate: model.architecture.num_mystery")
    est = estimate(load_config(LORA, ["model.id=someone/other-model"]))
    assert not est.ok and "shapes unknown" in est.problem


def test_an_estimate_is_fast() -> None:
    cfg, card = load_preset(LORA), load_profile(H100)
    started = time.perf_counter()
    for _ in range(20):
        estimate(cfg, card)
    assert (time.perf_counter() - started) / 20 < 0.05


def test_a_point_from_engine_events() -> None:
    path = REPO / "bench/results/2026-11-28-h100-engine-lora8192-levers-on.events.jsonl"
    point = point_from_events(path, "new", LORA, ["model.init=random"])
    assert point["measured"]["peak_mem_gib_per_gpu"] == pytest.approx(70.34, abs=0.01)
    # the median of steps 2-4 (the stored point has their mean, 9,419)
    assert point["measured"]["tokens_per_s"] == pytest.approx(9563.2, abs=0.1)
    assert point["hardware"] == {"gpu": "NVIDIA H100 80GB HBM3", "memory_total_gib": 79.18,
                                 "gpus": 1}
    assert point["dataset"]["packing_efficiency"] == pytest.approx(0.5835, abs=1e-3)
    assert check_point(point)  # loads and estimates like any stored point


def test_suggestions_for_more_gpus_and_offload() -> None:
    from osstune.engine.plan.suggest import suggestions

    eight = dataclasses.replace(load_profile(H100), ram_gib=1000.0,
                                gpus=[GpuInfo(i, "a 50 GiB card", 50.0) for i in range(8)])
    found = suggestions(load_preset("gpt-oss-20b-fft-fsdp2"), eight)
    assert [s.changes for s in found] == [["distributed.cpu_offload=true"],
                                          ["distributed.gpus=8"]]
    assert all(s.verdict in ("fits", "tight") and s.peak_mem_gib_per_gpu < 50 for s in found)


def test_every_measurement_in_bench_results_is_a_calibration_point() -> None:
    """Each measurement that trained (status ok) in bench/results/*.json is named by a point's
    source (file + variant + seq): adding a measurement is adding a point."""
    def measured(node: object) -> list[dict]:
        if isinstance(node, dict):
            own = [node] if node.get("status") == "ok" and "variant" in node and "seq" in node \
                and (node.get("tokens_per_s") or node.get("peak_reserved_gib")) else []
            return own + [r for v in node.values() for r in measured(v)]
        if isinstance(node, list):
            return [r for v in node for r in measured(v)]
        return []

    missing = []
    for path in sorted((REPO / "bench" / "results").glob("*.json")):
        rel = f"bench/results/{path.name}"
        sources = [p["source"] for p in POINTS if p["source"].startswith(rel)]
        for r in measured(json.loads(path.read_text(encoding="utf-8"))):
            variant = re.compile(rf"variant {re.escape(r['variant'])}[,:;)]")
            seq = re.compile(rf"seq {r['seq']}\b")
            if not any(variant.search(s) and seq.search(s) for s in sources):
                missing.append(f"{path.name}: {r['variant']} @ {r['seq']}")
    # and every engine run that timed a step (events.jsonl)
    for path in sorted((REPO / "bench" / "results").glob("*.events.jsonl")):
        steps = sum(json.loads(line).get("type") == "step"
                    for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        named = any(p["source"].startswith(f"bench/results/{path.name}") for p in POINTS)
        if steps >= 2 and not named:
            missing.append(path.name)
    assert not missing, missing



def test_offload_memory_follows_the_packed_row_length() -> None:
    """CPU offload merges micro-batches into passes: a pass holds the rows the run packs, so a
    longer `pack_len` than the merged pass raises the peak (it used sequence_len's pass)."""
    profile = load_profile(str(REPO / "tests" / "profiles" / "2xrtx4090-24gb.json"))
    peaks = [estimate(load_config("gpt-oss-20b-fft-fsdp2-offload", [f"training.pack_len={n}"]),
                      profile).peak_mem_gib_per_gpu for n in ("null", 32768, 65536)]
    assert peaks[0] < peaks[1] < peaks[2]
