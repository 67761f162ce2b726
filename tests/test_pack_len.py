"""`training.pack_len`: the rule (engine/plan/packlen.py), its one resolver (estimate.pack_len_for),
the same gradient in one long row as in short rows, and where the choice is shown."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from osstune.engine.data.dataset import Example
from osstune.engine.data.packing import pack_examples
from osstune.engine.plan import packlen
from osstune.engine.plan.config import ConfigError, load_config, validate
from osstune.engine.plan.estimate import DatasetFacts, estimate, pack_len_for, pack_len_on
from osstune.engine.plan.hardware import GpuInfo, load_profile
from osstune.engine.plan.packlen import GRANULE, KNEE, MAX_PACK_LEN, PackLen, choose
from osstune.engine.trainer import batches
from osstune.engine.trainer.model import build_meta_model, load_model_config, materialize_random
from osstune.engine.trainer.objective import IGNORE_INDEX, CausalLMObjective
from osstune.engine.trainer.train import Runtime, collate, forward_backward
from tests.engine_fixtures import REPO, tiny_config

LORA = "gpt-oss-20b-lora-1gpu"
H100 = REPO / "tests" / "profiles" / "1xh100-80gb.json"
CPU = torch.device("cpu")
RT = Runtime(rank=0, world_size=1, local_rank=0, device=CPU)


def _auto(*sets: str):
    return load_config(LORA, ["training.pack_len=auto", *sets])


# ----------------------------------------------------------------------------- the rule


def test_candidates_are_sequence_len_then_powers_of_two() -> None:
    # only lengths measured to start promptly: 12,288/14,336 stalled compiling the block mask
    assert packlen.candidates(2000, 20_000) == [2000, 2048, 4096, 8192, 16_384]
    assert packlen.candidates(2048, 8192) == [2048, 4096, 8192]
    assert packlen.candidates(3000) == [3000, *(1 << k for k in range(12, 18))]
    assert packlen.candidates(2048, 2048) == [2048]


def test_the_shortest_length_on_the_plateau_not_the_longest() -> None:
    def speed(n: int) -> float:  # fixed cost per row, flattening: 1e6 / (40 + 150_000 / n)
        return 1e6 / (40 + 150_000 / n)

    got = choose(2048, lambda n: True, speed, None)
    assert got.reason == "speed knee"
    best = speed(MAX_PACK_LEN)
    assert speed(got.length) >= KNEE * best
    shorter = [n for n in packlen.candidates(2048) if n < got.length]
    assert all(speed(n) < KNEE * best for n in shorter)
    assert 2048 < got.length < MAX_PACK_LEN


def test_memory_bound_and_dataset_cap_and_nothing_longer() -> None:
    fast = lambda n: float(n)  # noqa: E731 - longer is always faster
    mem = choose(2048, lambda n: n <= 10_000, fast, None)
    assert (mem.length, mem.reason) == (8192, "memory bound")
    data = choose(2048, lambda n: n <= 10_000, fast, 5000)
    assert (data.length, data.reason) == (4096, "dataset")
    assert choose(2000, lambda n: n <= 3000, fast, None).length == 2000  # 2048: within the knee
    none = choose(2048, lambda n: False, fast, None)
    assert (none.length, none.reason) == (2048, "memory bound")
    assert choose(2048, lambda n: True, fast, None).reason == "longest measured"
    assert choose(4096, lambda n: True, fast, 100).length == 4096  # never below sequence_len


def test_dataset_cap_leaves_steps_per_epoch() -> None:
    assert packlen.dataset_cap(None, 8) is None
    cap = packlen.dataset_cap(1_000_000, 8)
    assert cap % GRANULE == 0
    assert cap * 8 * packlen.MIN_STEPS_PER_EPOCH <= 1_000_000


# ----------------------------------------------------------------------------- one resolver


def test_auto_on_an_80gb_card_is_a_knee_that_fits_and_beats_sequence_len() -> None:
    cfg, hw = _auto(), load_profile(H100)
    chosen = pack_len_on(cfg, hw)
    assert chosen.reason == "speed knee" and chosen.length % GRANULE == 0
    assert 2048 < chosen.length < MAX_PACK_LEN
    est = estimate(cfg, hw)
    assert est.pack_len == chosen.length and est.pack_len_reason == chosen.why
    fixed = estimate(load_config(LORA, [f"training.pack_len={chosen.length}"]), hw)
    assert fixed.peak_mem_gib_per_gpu == est.peak_mem_gib_per_gpu  # figures for that length
    assert est.min_peak_mem_gib_per_gpu <= 79.65 * packlen.MEMORY_FRACTION
    short = estimate(load_config(LORA, ["training.pack_len=null"]), hw)
    assert short.pack_len == 2048
    assert est.tokens_per_s > 1.5 * short.tokens_per_s


def test_auto_keeps_sequence_len_where_longer_rows_cannot_help() -> None:
    hw = load_profile(H100)
    cases = {
        "cpu": pack_len_on(_auto("distributed.gpus=0"), hw),
        "packing off": pack_len_on(_auto("dataset.packing=false"), hw),
        "no card": pack_len_on(_auto(), None),
    }
    for reason, got in cases.items():
        assert (got.length, got.reason) == (2048, reason)
    small = dataclasses.replace(hw, gpus=[GpuInfo(0, "NVIDIA RTX A6000", 47.99)])
    assert pack_len_on(_auto(), small).length == 2048  # 41.8 GiB at 2048 already fills it
    tiny = validate(tiny_config(Path("/tmp"), training={"pack_len": "auto"}), "tiny")
    assert pack_len_for(tiny, None).length == tiny.training.sequence_len


def test_a_larger_card_or_dataset_never_chooses_shorter_rows_than_the_floor() -> None:
    hw = load_profile(H100)
    small_data = pack_len_on(_auto(), hw, DatasetFacts(tokens_total=300_000, examples=400))
    assert small_data.reason == "dataset"
    assert small_data.length * 8 * packlen.MIN_STEPS_PER_EPOCH <= 300_000
    assert pack_len_on(_auto("training.sequence_len=8192"), hw).length >= 8192


def test_config_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pack_len 1024 is shorter than sequence_len 2048"):
        load_config(LORA, ["pack_len=1024"])
    with pytest.raises(ConfigError, match="training.pack_len: must be a row length"):
        load_config(LORA, ["training.pack_len=longest"])
    assert load_config(LORA, ["pack_len=8192"]).training.pack_len == 8192
    assert load_config(LORA).training.pack_len == "auto"
    assert load_config("tiny-cpu-demo").training.pack_len is None


# ----------------------------------------------------------------------------- same gradient


@pytest.fixture(scope="module")
def tiny_objective(tmp_path_factory):
    cfg = validate(tiny_config(tmp_path_factory.mktemp("packlen")), "test")
    lm = build_meta_model(load_model_config(cfg, CPU), torch.float32)
    materialize_random(lm, CPU, seed=11)
    return CausalLMObjective(lm, torch.float32)


def _examples(lengths: list[int], seed: int = 0) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = torch.randint(0, 5000, (n,), generator=g).tolist()
        prompt = n // 3
        out.append(Example(i + 1, ids, [IGNORE_INDEX] * prompt + ids[prompt:], [0] * n,
                           ["assistant"] * n))
    return out


def _grads(objective) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
    objective.zero_grad(set_to_none=True)
    return out


def test_one_long_row_trains_like_the_same_examples_in_short_rows(tiny_objective) -> None:
    examples = _examples([40, 25, 33, 18, 47, 30, 22])
    short = pack_examples(examples, 64, seed=3)  # several rows of 64: one micro-batch each
    long = pack_examples(examples, 256, seed=3)  # one row of 256 (with padding)
    assert len(short) > 2 and len(long) == 1
    loss_s, n_s, _ = forward_backward(tiny_objective, [collate([r]) for r in short], RT)
    g_short = _grads(tiny_objective)
    loss_l, n_l, _ = forward_backward(tiny_objective, [collate(long)], RT)
    g_long = _grads(tiny_objective)
    assert n_s == n_l == sum(len(e.input_ids) - len(e.input_ids) // 3 for e in examples)
    assert float(loss_l) / n_l == pytest.approx(float(loss_s) / n_s, rel=1e-5)
    assert g_long.keys() == g_short.keys() and g_long
    for name, g in g_short.items():
        torch.testing.assert_close(g_long[name], g, rtol=1e-4, atol=1e-6)
    # A per-row mean (the usual mistake) would weigh short rows' tokens differently.
    with torch.no_grad():
        means = [float(tiny_objective(*_tensors(collate([r])))[0]) / collate([r]).trained_tokens
                 for r in short]
    assert abs(sum(means) / len(means) - float(loss_l) / n_l) > 1e-4


def _tensors(batch):
    return batch.input_ids, batch.position_ids, batch.targets


# ----------------------------------------------------------------------------- the engine


def _chats(path: Path, count: int) -> Path:
    words = ["short", "chat", "examples", "packed", "into", "longer", "rows", "train", "faster",
             "per", "token"]
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            text = " ".join(words[(i + j) % len(words)] for j in range(20 + i % 60))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                             {"role": "assistant", "content": text}]}) + "\n")
    return path


def test_engine_packs_at_the_resolved_length_for_the_free_memory(tmp_path, monkeypatch) -> None:
    data = _chats(tmp_path / "chats.jsonl", 300)
    cfg = validate(tiny_config(tmp_path, training={"pack_len": "auto", "sequence_len": 512,
                                                   "micro_batch_size": 1,
                                                   "gradient_accumulation_steps": 1},
                               distributed={"gpus": 1}, dataset={"path": str(data)}), "tiny")
    monkeypatch.setattr(batches, "card_memory_gib",
                        lambda rt: (79.2, 70.0, "NVIDIA H100 80GB HBM3"))
    rows, _val, stats, _tok = batches.training_rows(cfg, RT)
    chosen = PackLen.from_dict(stats["pack_len"])
    assert chosen.length > 512 and chosen.reason == "dataset"  # a tiny model: the data bounds it
    assert {len(r.input_ids) for r in rows} == {chosen.length}
    assert stats["packed_rows"] == len(rows) and stats["rows"] == len(rows)
    # A resumed run packs the rows it trained on, whatever the card has free now.
    rows2, _v, stats2, _t = batches.training_rows(cfg, RT, resumed_pack_len=1024)
    assert stats2["pack_len"]["reason"] == "resumed"
    assert {len(r.input_ids) for r in rows2} == {1024}


# ----------------------------------------------------------------------------- the CLI


def _cli(*args: str):  # noqa: ANN202 - click Result
    from typer.testing import CliRunner

    from osstune.tui.cli import app

    return CliRunner().invoke(app, list(args), env={"HF_HUB_OFFLINE": "1", "NO_COLOR": "1"})


def test_plan_shows_the_resolved_length_in_text_and_json() -> None:
    text = _cli("plan", LORA, "--hardware", str(H100))
    assert text.exit_code == 0, text.stderr
    chosen = pack_len_on(load_config(LORA), load_profile(H100))
    assert f"rows: pack_len {chosen.length:,} tokens (auto: speed knee" in text.stdout
    data = json.loads(_cli("plan", LORA, "--hardware", str(H100), "--json",
                           "--set", "pack_len=4096").stdout)
    assert data["pack_len"] == 4096 and data["pack_len_reason"] == "training.pack_len"


def test_inspect_packs_at_the_length_the_run_would_use() -> None:
    out = _cli("--hardware", str(H100), "inspect", "--preset", LORA, "--count", "0",
               "--set", "pack_len=4096")
    assert out.exit_code == 0, out.stderr
    assert "of 4096 tokens" in out.stdout and "(pack_len training.pack_len)" in out.stdout
    auto = _cli("--hardware", str(H100), "inspect", "--preset", LORA, "--count", "0")
    assert "(pack_len auto: the longest row the dataset fills" in auto.stdout  # 36 short chats


def test_bad_pack_len_is_one_line_and_exit_2() -> None:
    out = _cli("plan", LORA, "--set", "pack_len=1000")
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "training: pack_len 1000 is shorter than sequence_len" in lines[0]


def test_a_packed_length_that_does_not_fit_suggests_rows_of_sequence_len() -> None:
    from osstune.engine.plan.suggest import suggestions

    cfg = load_config(LORA, ["pack_len=131072"])
    found = suggestions(cfg, load_profile(H100))
    assert found and found[0].changes == ["training.pack_len=null"]


# ------------------------------------------------------- plan and engine: one rule, one choice

H200 = REPO / "tests" / "profiles" / "1xh200-141gb-disk51.json"


def _chat_rows(path: Path, rows: int) -> Path:
    """bench/chat_rows.py's synthetic chats (the H200 CLI runs' dataset), `rows` of them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chat_rows", REPO / "bench" / "chat_rows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_rows(path, rows)
    return path


def test_plan_with_a_dataset_and_the_engine_choose_the_same_pack_len(tmp_path, monkeypatch
                                                                     ) -> None:
    data = _chat_rows(tmp_path / "chat.jsonl", 60)
    sets = ["model.tokenizer=builtin:gpt-oss-offline", "training.gradient_accumulation_steps=2"]
    out = _cli("plan", LORA, *[a for s in sets for a in ("--set", s)], "--dataset", str(data),
               "--hardware", str(H200), "--json")
    assert out.exit_code == 0, out.stderr
    planned = json.loads(out.stdout)
    # the plan read the dataset: its statistics, not "rows full of real tokens"
    assert not any("no dataset statistics" in a for a in planned["assumptions"])
    blind = json.loads(_cli("plan", LORA, *[a for s in sets for a in ("--set", s)],
                            "--hardware", str(H200), "--json").stdout)
    assert any("no dataset statistics" in a for a in blind["assumptions"])
    assert planned["train_tokens"] != blind["train_tokens"]
    # the engine on an idle H200 (free: the total less its context) chooses the same length
    cfg = load_config(LORA, [*sets, f"dataset.path={data}"])
    monkeypatch.setattr(batches, "card_memory_gib", lambda rt: (139.8, 139.3, "NVIDIA H200"))
    _rows, _val, stats, _tok = batches.training_rows(cfg, RT)
    assert stats["pack_len"]["length"] == planned["pack_len"]
    assert stats["pack_len"]["why"] == planned["pack_len_reason"]


@pytest.mark.parametrize("free", [None, 139.3, 100.0, 60.0, 30.0])
def test_plan_and_engine_size_rows_by_one_rule(free: float | None, monkeypatch) -> None:
    """The plan sizes for the profile's card (its free memory when the profile has it), the
    engine for the card it starts on: the same total and free memory give the same length."""
    cfg = load_config(LORA, ["training.gradient_accumulation_steps=2"])
    profile = load_profile(H200)
    profile.gpus[0].memory_free_gib = free
    stats = dataclasses.make_dataclass("S", ["tokens_total", "examples"])(502_640, 600)
    planned = pack_len_on(cfg, profile, DatasetFacts(502_640, 600))
    monkeypatch.setattr(batches, "card_memory_gib",
                        lambda rt: (139.8, 139.8 - 0.5 if free is None else free, "NVIDIA H200"))
    assert batches.resolve_pack_len(cfg, RT, stats, None) == planned
    if free is not None and free < 60:  # a busy card: shorter rows than an idle one
        idle = pack_len_on(cfg, load_profile(H200), DatasetFacts(502_640, 600))
        assert planned.length < idle.length


def test_only_the_cards_the_run_uses_size_its_rows() -> None:
    """A one-GPU run on a two-GPU machine: a busy second card does not shorten its rows."""
    cfg = load_config(LORA, ["training.gradient_accumulation_steps=2"])
    one = load_profile(H200)
    one.gpus[0].memory_free_gib = 139.2
    two = load_profile(H200)
    two.gpus = [dataclasses.replace(one.gpus[0], index=0),
                dataclasses.replace(one.gpus[0], index=1, memory_free_gib=30.0)]
    assert pack_len_on(cfg, two) == pack_len_on(cfg, one)
    busy = load_config(LORA, ["training.gradient_accumulation_steps=2", "distributed.gpus=2",
                              "distributed.fsdp=true", "method=full"])
    both_busy = load_profile(H200)
    both_busy.gpus = [dataclasses.replace(g, memory_free_gib=30.0) for g in two.gpus]
    assert pack_len_on(busy, two) == pack_len_on(busy, both_busy)  # a two-GPU run: both count
