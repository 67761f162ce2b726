"""prepare_dataset, pack_examples, token_view: sources, row policies, over-length, cache."""

from __future__ import annotations

import json

import pytest

import osstune.engine.data.dataset as dataset_mod
import osstune.engine.data.dataset_batches as dataset_batches
import osstune.engine.data.dataset_cache as cache_mod
from osstune.engine.data.dataset import (
    DATASET_BUILTIN_SAMPLE,
    DatasetError,
    PipelineSettings,
    pack_examples,
    prepare_dataset,
    prepare_rows,
    token_view,
)
from osstune.engine.data.dataset_sources import builtin_sample_path, read_local
from osstune.engine.data.harmony import IGNORE_INDEX
from osstune.engine.plan.config import load_config


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own dataset cache (the tokenizer cache stays shared)."""
    folder = tmp_path / "dataset-cache"
    monkeypatch.setattr(cache_mod, "cache_dir", lambda: folder)
    return folder


def make_cfg(path, sequence_len=512, **dataset):
    cfg = load_config("tiny-cpu-demo")
    cfg.dataset.path = str(path)
    cfg.training.sequence_len = sequence_len
    for key, value in dataset.items():
        setattr(cfg.dataset, key, value)
    return cfg


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


GOOD = {"messages": [U("hi"), A("hello")]}
LONG = {"messages": [U("word " * 600), A("ok")]}
BAD = [
    {"messages": [{"role": "narrator", "content": "x"}, A("y")]},
    {"messages": [U("x"), {"role": "tool", "content": "y"}, A("z")]},
    {"messages": [U("x")]},
    {"messages": [U("x"), {"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": "{oops"}}]}]},
    {"messages": [U(12), A("z")]},
    "{not json",
    LONG,
]


def test_builtin_sample(tokenizer):
    prepared = prepare_dataset(make_cfg(DATASET_BUILTIN_SAMPLE), tokenizer)
    stats = prepared.stats
    assert stats.rows_read == 36 and stats.rows_skipped == {} and stats.examples == 36
    assert stats.tokens_total == sum(len(e) for e in prepared.examples)
    assert 0 < stats.tokens_trained < stats.tokens_total
    assert sum(stats.length_buckets.values()) == 36
    assert 0.5 < stats.packing_efficiency <= 1.0
    assert stats.as_dict()["trained_fraction"] == pytest.approx(stats.trained_fraction, abs=1e-6)


def test_skip_policy_counts_every_reason(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [GOOD, *BAD, GOOD])
    prepared = prepare_dataset(make_cfg(path, sequence_len=256), tokenizer)
    stats = prepared.stats
    assert stats.rows_read == 9 and stats.examples == 2
    assert [e.row for e in prepared.examples] == [1, 9]  # 1-based, like line numbers
    assert stats.rows_skipped == {
        "unknown role": 1, "tool result without a call": 1, "no assistant message": 1,
        "arguments not JSON": 1, "content of the wrong type": 1, "row not valid JSON": 1,
        "longer than sequence_len": 1}
    assert stats.skip_samples[0] == ("row 2: message 0: unknown role 'narrator' (expected "
                                     "system, developer, user, assistant or tool)")
    assert any(s.startswith("row 7: not valid JSON") for s in stats.skip_samples)
    assert any(s.startswith("row 8: ") and s.endswith("tokens, longer than sequence_len 256")
               for s in stats.skip_samples)


@pytest.mark.parametrize("bad, message", [
    (BAD[0], "row 2: message 0: unknown role 'narrator' (expected system, developer, user, "
             "assistant or tool)"),
    (BAD[1], "row 2: message 1: tool result without a preceding tool call"),
    (BAD[2], "row 2: no assistant message"),
    (BAD[4], "row 2: message 0 (user): content must be a string, got int"),
])
def test_fail_policy_stops_with_row_and_reason(tokenizer, tmp_path, bad, message):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, bad])
    with pytest.raises(DatasetError) as info:
        prepare_dataset(make_cfg(path, invalid_rows="fail"), tokenizer)
    assert str(info.value) == f"{path}: {message}"


def test_overlength_fail_message(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [LONG])
    n = len(prepare_dataset(make_cfg(path, sequence_len=4096), tokenizer).examples[0])
    with pytest.raises(DatasetError) as info:
        prepare_dataset(make_cfg(path, sequence_len=256, invalid_rows="fail"), tokenizer)
    assert str(info.value) == f"{path}: row 1: {n} tokens, longer than sequence_len 256"


def test_overlength_truncate(tokenizer, tmp_path):
    long_answer = {"messages": [U("q"), A("answer " * 600)]}
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, long_answer, LONG])
    prepared = prepare_dataset(make_cfg(path, sequence_len=256, overlength="truncate"), tokenizer)
    stats = prepared.stats
    assert stats.examples_truncated == 2
    assert [len(e) for e in prepared.examples][1] == 256
    # the long prompt left nothing trained once cut: skipped, not trained on nothing
    assert stats.rows_skipped == {"no trained tokens": 1}
    assert all(len(e) <= 256 for e in prepared.examples)


def test_expand_gives_one_example_per_turn(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": [U("a"), A("b"), U("c"), A("d"), U("e"), A("f")]}, GOOD])
    prepared = prepare_dataset(make_cfg(path, train_turns="expand"), tokenizer)
    assert [(e.row, e.turn) for e in prepared.examples] == [(1, 1), (1, 2), (1, 3), (2, 1)]


def test_missing_file(tokenizer, tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.jsonl: no such file or folder$"):
        prepare_dataset(make_cfg(tmp_path / "nope.jsonl"), tokenizer)


def test_unreadable_parquet(tokenizer, tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DatasetError, match=r"broken\.parquet: unreadable Parquet file: "):
        prepare_dataset(make_cfg(path), tokenizer)


def test_parquet_with_tools_as_json_string(tokenizer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tools = json.dumps([{"type": "function", "function": {"name": "f", "description": "F"}}])
    rows = [{"messages": [U("q"), {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "r", "tool_call_id": None}, A("done")], "tools": tools},
        {"messages": [U("q"), A("a")], "tools": "[]"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    prepared = prepare_dataset(make_cfg(tmp_path / "t.parquet"), tokenizer)
    assert prepared.stats.examples == 2 and prepared.stats.rows_skipped == {}
    assert "type f = () => any;" in tokenizer.decode(prepared.examples[0].input_ids)


def test_json_list_and_folder(tokenizer, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.json").write_text(json.dumps([GOOD, GOOD]))
    (tmp_path / "data" / "b.json").write_text(json.dumps({"data": [GOOD]}))
    prepared = prepare_dataset(make_cfg(tmp_path / "data"), tokenizer)
    assert prepared.stats.rows_read == 3 and prepared.stats.examples == 3


def test_hub_id_while_offline(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError) as info:
        prepare_dataset(make_cfg("someone/not-cached-dataset-xyz"), tokenizer)
    assert str(info.value) == ("someone/not-cached-dataset-xyz: hub dataset not in the local "
                               "cache and the hub is unreachable (offline); give a local file")


def test_no_usable_rows(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [BAD[2], BAD[2]])
    with pytest.raises(DatasetError) as info:
        prepare_dataset(make_cfg(path), tokenizer)
    assert str(info.value) == (f"{path}: no usable examples (2 rows read; skipped by reason: "
                               "no assistant message: 2)")


def test_cache_reused_and_keyed_by_settings(tokenizer, tmp_path, private_cache, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"messages": [U("a"), A("b"), U("c"),
                                                                  A("d")]}])
    first = prepare_dataset(make_cfg(path), tokenizer)
    assert len(list(private_cache.glob("*.npz"))) == 1

    def no_work(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(dataset_mod, "prepare_rows", no_work)
    again = prepare_dataset(make_cfg(path), tokenizer)
    assert [e.__dict__ for e in again.examples] == [e.__dict__ for e in first.examples]
    assert again.stats.as_dict() == first.stats.as_dict()
    monkeypatch.undo()
    monkeypatch.setattr(cache_mod, "cache_dir", lambda: private_cache)
    prepare_dataset(make_cfg(path, train_turns="expand"), tokenizer)
    assert len(list(private_cache.glob("*.npz"))) == 2
    path.write_text(path.read_text() + json.dumps(GOOD) + "\n")  # new content, new fingerprint
    assert prepare_dataset(make_cfg(path), tokenizer).stats.rows_read == 3


def test_parallel_equals_serial(tokenizer, monkeypatch):
    rows = read_local(builtin_sample_path()).rows * 3
    settings = PipelineSettings.from_config(make_cfg(DATASET_BUILTIN_SAMPLE))
    serial, serial_stats = prepare_rows(rows, "messages", settings, tokenizer, num_proc=1)
    monkeypatch.setattr(dataset_batches, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(dataset_batches, "BATCH_ROWS", 16)
    parallel, parallel_stats = prepare_rows(rows, "messages", settings, tokenizer, num_proc=2)
    assert [e.__dict__ for e in parallel] == [e.__dict__ for e in serial]
    assert parallel_stats.as_dict() == serial_stats.as_dict()


def test_pack_examples(tokenizer):
    examples = prepare_dataset(make_cfg(DATASET_BUILTIN_SAMPLE), tokenizer).examples
    rows = pack_examples(examples, 512, seed=7)
    assert rows == pack_examples(examples, 512, seed=7)  # deterministic
    assert [r.input_ids for r in rows] != [r.input_ids for r in pack_examples(examples, 512, 8)]
    packed = []
    for r in rows:
        assert len(r.input_ids) == len(r.labels) == len(r.position_ids) == 512
        assert sum(r.example_lengths) == 512
        at = 0
        for n in r.example_lengths:
            assert r.position_ids[at:at + n] == list(range(n))  # restart per example
            packed.append((tuple(r.input_ids[at:at + n]), tuple(r.labels[at:at + n])))
            at += n
    real = sorted((tuple(e.input_ids), tuple(e.labels)) for e in examples)
    pads = [p for p in packed if p[0][0] == dataset_mod.PAD_ID]
    assert all(set(labels) == {IGNORE_INDEX} for _ids, labels in pads)
    assert sorted(p for p in packed if p[0][0] != dataset_mod.PAD_ID) == real
    assert len(rows) <= -(-sum(len(e) for e in examples) // 512) + 1  # near-optimal fill
    with pytest.raises(ValueError, match="longer than sequence_len 16"):
        pack_examples(examples, 16, seed=0)


def test_token_view(tokenizer):
    example = prepare_dataset(make_cfg(DATASET_BUILTIN_SAMPLE), tokenizer).examples[28]
    views = token_view(tokenizer, example)
    assert "".join(v.text for v in views) == tokenizer.decode(example.input_ids)
    assert [v.trained for v in views] == [lbl != IGNORE_INDEX for lbl in example.labels]
    assert {v.text for v in views if v.special} >= {"<|start|>", "<|message|>", "<|end|>"}
    assert all(v.id >= 199998 for v in views if v.special)
    assert [(v.message_index, v.role) for v in views] == list(
        zip(example.message_index, example.role, strict=True))


def test_progress_bar_only_on_a_terminal_in_the_main_thread(monkeypatch):
    import sys
    import threading

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = dataset_batches._progress(10_000, "preparing")
    assert bar is not None
    bar.stop()
    assert dataset_batches._progress(10, "preparing") is None  # too small to bother
    seen = []
    worker = threading.Thread(target=lambda: seen.append(dataset_batches._progress(10_000, "x")))
    worker.start()
    worker.join()
    assert seen == [None]  # the wizard's worker thread: Textual owns the terminal
