"""bench/gpu/mxfp4.sh's Python parts on the CPU (tiny shapes): packed vs bf16 in one process per
model, the part files, the numerics twins (and that they catch a wrong weight), and the pooled
random folder read back through the engine's loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def parts():
    sys.path.insert(0, str(BENCH))
    import mxfp4_numerics
    import mxfp4_parts

    yield mxfp4_parts, mxfp4_numerics
    sys.path.remove(str(BENCH))


def test_script_parses_and_names_every_part():
    script = BENCH / "gpu" / "mxfp4.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for part in ("lengths", "packed", "--write", "--load", "summary"):
        assert part in text


def test_comparison_and_longest_judge_the_targets(parts):
    mxfp4_parts, _ = parts
    bf16 = {"status": "ok", "tokens_per_s": 1000.0, "peak_reserved_gib": 42.0}
    fast = {"status": "ok", "tokens_per_s": 950.0, "peak_reserved_gib": 21.5}
    out = mxfp4_parts.comparison(8192, bf16, fast, memory_target=True)
    assert out["speed_ratio"] == 0.95 and out["meets_speed_target"]
    assert out["meets_memory_target"] and out["memory_saved_gib"] == 20.5
    slow = {**fast, "tokens_per_s": 850.0, "peak_reserved_gib": 22.5}
    out = mxfp4_parts.comparison(8192, bf16, slow, memory_target=True)
    assert not out["meets_speed_target"] and not out["meets_memory_target"]
    alone = mxfp4_parts.comparison(2048, None, fast)
    assert alone["bf16"]["status"].startswith("skipped") and "speed_ratio" not in alone
    assert "meets_memory_target" not in alone
    longest = mxfp4_parts._longest([{"seq": 16384, "status": "ok"},
                                    {"seq": 32768, "status": "oom"}])
    assert longest["longest_ok"] == 16384 and longest["meets_target"]
    assert not mxfp4_parts._longest([{"seq": 16384, "status": "oom"}])["meets_target"]


def test_lengths_then_packed_write_every_part(parts, tmp_path):
    mxfp4_parts, _ = parts
    common = ["--tiny", "--warmup", "1", "--steps", "1"]
    assert mxfp4_parts.main(["lengths", *common, "--seqs", "24,16",
                             "--out", str(tmp_path / "bf16.json")]) == 0
    bf16 = json.loads((tmp_path / "bf16.json").read_text())["results"]
    assert [(r["seq"], r["status"]) for r in bf16] == [(24, "ok"), (16, "ok")]
    assert mxfp4_parts.main(["packed", *common, "--seq-a", "24", "--longest", "32,40",
                             "--seq-c", "16", "--seq-d", "8", "--bf16",
                             str(tmp_path / "bf16.json"), "--outdir", str(tmp_path)]) == 0
    measured = json.loads((tmp_path / "packed.json").read_text())["results"]
    assert [r["seq"] for r in measured] == [24, 32, 16, 40]  # a, b, c, then b's second row
    a = json.loads((tmp_path / "a-8192.json").read_text())
    assert a["packed"]["status"] == "ok" and a["packed"]["spec"]["packed"]
    assert a["packed"]["engine"]["preset"] == "gpt-oss-20b-lora-mxfp4"
    assert a["speed_ratio"] > 0 and a["bf16"]["seq"] == 24
    b = json.loads((tmp_path / "b-longest.json").read_text())
    assert [r["seq"] for r in b["tried"]] == [32, 40] and b["longest_ok"] == 40
    assert json.loads((tmp_path / "c-2048.json").read_text())["packed"]["seq"] == 16
    d = json.loads((tmp_path / "d-numerics.json").read_text())
    assert d["ok"] and d["attention_and_expert_lora"]["grads"] > d["attention_lora"]["grads"]
    # past the deadline: the later parts say so instead of running
    assert mxfp4_parts.main(["packed", *common, "--seq-a", "24", "--longest", "32,40",
                             "--seq-c", "16", "--deadline", "0", "--outdir",
                             str(tmp_path / "late")]) == 0
    late = json.loads((tmp_path / "late" / "b-longest.json").read_text())
    assert late["tried"][0]["status"] == "skipped (budget)" and late["longest_ok"] is None
    assert not (tmp_path / "late" / "d-numerics.json").exists()


def test_numerics_twins_agree_and_catch_a_wrong_expert_weight(parts):
    _, numerics = parts
    from bench_variants import TINY

    two = {**TINY, "num_hidden_layers": 2}
    ids = torch.randint(0, 500, (1, 12), generator=torch.Generator().manual_seed(0))
    packed, plain = numerics.twins(two, torch.device("cpu"), torch.float32)
    assert not hasattr(packed.model.layers[0].mlp.experts, "gate_up_proj")
    same = numerics.compare(numerics.lora_grads(packed, ids, True),
                            numerics.lora_grads(plain, ids, True))
    assert same["ok"] and same["max_grad_rel_l2_diff"] < 1e-5
    packed, plain = numerics.twins(two, torch.device("cpu"), torch.float32)
    with torch.no_grad():  # e.g. gate/up columns not interleaved as upstream
        experts = plain.model.layers[0].mlp.experts
        experts.gate_up_proj.copy_(experts.gate_up_proj.roll(1, dims=-1))
    wrong = numerics.compare(numerics.lora_grads(packed, ids, False),
                             numerics.lora_grads(plain, ids, False))
    assert not wrong["ok"]


def test_pooled_full_size_writer_reads_back_through_the_engine(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # write/load import their bench siblings when called
    import bench_mxfp4

    written = bench_mxfp4.write(tmp_path / "hub", "tiny")
    assert written["folder_gib"] >= 0
    result = bench_mxfp4.load(tmp_path / "hub", steps=1, seq=8, device_name="cpu", attn="eager")
    assert result["meets_rss_target"] and result["load_s"] >= 0
    assert all(torch.isfinite(torch.tensor(result["losses"])))
