"""More layouts (Alpaca, ShareGPT's `system`, LLaMA-Factory tool turns), the empty-answer rule
against openai-harmony, and how rows are read (raw CR, deep nesting, row numbers, locations)."""

from __future__ import annotations

import json

import pytest
from harmony_fixtures import reference_ids

import osstune.engine.data.dataset_cache as cache_mod
from osstune.engine.data.chat import RowError
from osstune.engine.data.dataset import (
    DatasetError,
    PipelineSettings,
    prepare_dataset,
    prepare_rows,
)
from osstune.engine.data.dataset_formats import (
    NO_ASSISTANT,
    WRONG_CONTENT_TYPE,
    FormatOptions,
    detect_format,
    row_to_chat,
)
from osstune.engine.data.dataset_sources import dataset_problem, read_local
from osstune.engine.data.harmony import HarmonyRenderer, RenderSettings
from osstune.engine.plan.config import load_config

OPTS = FormatOptions()
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "cache_dir", lambda: tmp_path / "dataset-cache")


def ids(tokenizer, row, fmt):
    [example] = HarmonyRenderer(tokenizer, RenderSettings()).render(row_to_chat(row, fmt, OPTS))
    return example.input_ids


def cfg_for(path, **dataset):
    cfg = load_config("tiny-cpu-demo")
    cfg.dataset.path = str(path)
    for key, value in dataset.items():
        setattr(cfg.dataset, key, value)
    return cfg


# --------------------------------------------------------------------------- Alpaca


def test_alpaca_detected_and_rendered_like_messages(tokenizer, harmony_encoding):
    assert detect_format(["instruction", "input", "output"], OPTS) == "alpaca"
    assert detect_format(["instruction", "output", "system"], OPTS) == "alpaca"
    row = {"system": "Be brief.", "instruction": "Translate to French.", "input": "cheese",
           "output": "fromage"}
    same = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Translate to French.\n\ncheese"},
                         {"role": "assistant", "content": "fromage"}]}
    assert ids(tokenizer, row, "alpaca") == reference_ids(harmony_encoding, same)
    no_input = {"instruction": "Say hi.", "input": "", "output": "hi"}
    assert ids(tokenizer, no_input, "alpaca") == reference_ids(harmony_encoding, {"messages": [
        {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]})


def test_alpaca_history_and_errors(tokenizer, harmony_encoding):
    row = {"instruction": "and 3+3?", "output": "6", "history": [["2+2?", "4"]]}
    expected = {"messages": [{"role": "user", "content": "2+2?"},
                             {"role": "assistant", "content": "4"},
                             {"role": "user", "content": "and 3+3?"},
                             {"role": "assistant", "content": "6"}]}
    assert ids(tokenizer, row, "alpaca") == reference_ids(harmony_encoding, expected)
    for bad, reason in [({"instruction": "q"}, NO_ASSISTANT),
                        ({"instruction": 3, "output": "a"}, WRONG_CONTENT_TYPE),
                        ({"instruction": "q", "output": "a", "history": [["only one"]]},
                         WRONG_CONTENT_TYPE)]:
        with pytest.raises(RowError) as info:
            row_to_chat(bad, "alpaca", OPTS)
        assert info.value.reason == reason


# --------------------------------------------------------------------------- ShareGPT


def test_sharegpt_system_column_is_kept(tokenizer, harmony_encoding):
    conversation = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    row = {"system": "Answer in French.", "conversations": conversation}
    with_system = {"messages": [{"role": "system", "content": "Answer in French."},
                                {"role": "user", "content": "q"},
                                {"role": "assistant", "content": "a"}]}
    assert ids(tokenizer, row, "sharegpt") == reference_ids(harmony_encoding, with_system)
    assert ids(tokenizer, {"conversations": conversation, "system": ""}, "sharegpt") == \
        reference_ids(harmony_encoding, {"messages": with_system["messages"][1:]})
    with pytest.raises(RowError, match="system must be a string"):
        row_to_chat({"system": ["x"], "conversations": conversation}, "sharegpt", OPTS)
    # messages keep their numbers in `conversations` (errors point at the right one)
    bad = [conversation[0], {"from": "gpt", "value": 5}]
    with pytest.raises(RowError, match=r"^message 1 \(assistant\): content must be a string"):
        row_to_chat({"system": "s", "conversations": bad}, "sharegpt", OPTS)


def test_llama_factory_function_call_and_observation(tokenizer, harmony_encoding):
    row = {"conversations": [
        {"from": "human", "value": "Weather in Rome?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather",
                                                       "arguments": {"city": "Rome"}})},
        {"from": "observation", "value": "warm"},
        {"from": "gpt", "value": "It is warm."}],
        "tools": json.dumps([WEATHER["function"]])}
    openai = {"messages": [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "content": "warm"},
        {"role": "assistant", "content": "It is warm."}], "tools": [WEATHER]}
    assert ids(tokenizer, row, "sharegpt") == reference_ids(harmony_encoding, openai)
    bad = {"conversations": [row["conversations"][0], {"from": "function_call", "value": "{x"}]}
    with pytest.raises(RowError, match="function_call"):
        row_to_chat(bad, "sharegpt", OPTS)


# --------------------------------------------------------------------------- empty answers


def test_reasoning_with_empty_answer_matches_openai_harmony(tokenizer, harmony_encoding):
    """The rule: analysis, then an empty final message, exactly as openai-harmony renders the
    turn [analysis, final ""] (built here by hand, not through the test converter)."""
    from openai_harmony import (
        Conversation,
        Message,
        ReasoningEffort,
        RenderConversationConfig,
        Role,
        SystemContent,
    )

    system = SystemContent.new().with_reasoning_effort(ReasoningEffort.MEDIUM)
    conv = Conversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, system),
        Message.from_role_and_content(Role.USER, "q"),
        Message.from_role_and_content(Role.ASSISTANT, "thoughts").with_channel("analysis"),
        Message.from_role_and_content(Role.ASSISTANT, "").with_channel("final"),
    ])
    reference = list(harmony_encoding.render_conversation_for_training(
        conv, RenderConversationConfig(auto_drop_analysis=False)))
    for content in ("", None):
        row = {"messages": [{"role": "user", "content": "q"},
                            {"role": "assistant", "content": content, "thinking": "thoughts"}]}
        assert ids(tokenizer, row, "messages") == reference
    tail = tokenizer.decode(reference[-8:])
    assert tail.endswith("<|end|><|start|>assistant<|channel|>final<|message|><|return|>")


def test_export_template_writes_the_empty_final_too(tokenizer):
    from osstune.engine.data.chat_template import CHAT_TEMPLATE

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "thinking": "t"}],
        chat_template=CHAT_TEMPLATE, tokenize=False)
    assert text.endswith("<|start|>assistant<|channel|>analysis<|message|>t<|end|>"
                         "<|start|>assistant<|channel|>final<|message|><|end|>")


def test_empty_answers_are_counted(tokenizer):
    rows = [{"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": "", "thinking": "t"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a",
                                                             "thinking": "t"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant",
                                                             "thinking": "t"}]}]
    settings = PipelineSettings.from_config(cfg_for("x"))
    _examples, stats = prepare_rows(rows, "messages", settings, tokenizer)
    assert stats.examples == 3 and stats.rows_empty_answer == 2


# --------------------------------------------------------------------------- reading rows


def good(text="a"):
    return json.dumps({"messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": text}]})


def test_raw_cr_does_not_split_a_line(tmp_path, tokenizer):
    raw_cr = good("x").replace('"x"', '"one\rtwo"')
    path = tmp_path / "d.jsonl"
    path.write_bytes((raw_cr + "\r\n" + "{bad\r\n" + good() + "\n").encode())
    source = read_local(path)
    assert len(source.rows) == 3 and source.locations == ["line 1", "line 2", "line 3"]
    assert source.rows[0]["messages"][1]["content"] == "one\rtwo"
    prepared = prepare_dataset(cfg_for(path), tokenizer)
    assert prepared.stats.rows_read == 3 and [e.row for e in prepared.examples] == [1, 3]
    assert prepared.stats.skip_samples == [
        "row 2: not valid JSON: Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)"]


def test_deep_nesting_is_a_bad_row_not_a_crash(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_text(good() + "\n" + "[" * 100_000 + "]" * 100_000 + "\n"
                    + '{"messages": ' + "[" * 100_000 + "\n")
    prepared = prepare_dataset(cfg_for(path), tokenizer)
    assert prepared.stats.rows_skipped == {"row not valid JSON": 2}
    assert prepared.stats.skip_samples[0] == "row 2: not valid JSON: nested too deeply"
    # Deep values that parse (built in memory, as Parquet could) are skipped when walked.
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": deep}}]}]}
    settings = PipelineSettings.from_config(cfg_for("x"))
    _examples, stats = prepare_rows([row, json.loads(good())], "messages", settings, tokenizer)
    assert stats.rows_skipped == {"content of the wrong type": 1}
    assert stats.skip_samples == ["row 1: nested too deeply"]


def test_every_line_invalid_says_what_is_wrong(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_text("{oops\n[1, 2]\nnot json\n\"text\"\n")
    with pytest.raises(DatasetError) as info:
        prepare_dataset(cfg_for(path), tokenizer)
    assert str(info.value) == (
        f"{path}: no row is a JSON object; row 1: not valid JSON: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1); row 2: a JSON array, not an "
        "object; row 3: not valid JSON: Expecting value: line 1 column 1 (char 0) (and 1 more)")


def test_folder_rows_name_their_file(tmp_path, tokenizer):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text(good() + "\n" + good() + "\n")
    (folder / "b.jsonl").write_text(good() + "\n\n" + json.dumps({"messages": [
        {"role": "narrator", "content": "x"}]}) + "\n")
    prepared = prepare_dataset(cfg_for(folder), tokenizer)
    assert prepared.stats.rows_read == 4
    assert prepared.stats.skip_samples[0].startswith("row 4 (b.jsonl line 3): message 0: "
                                                     "unknown role 'narrator'")
    with pytest.raises(DatasetError, match=r"row 4 \(b.jsonl line 3\): message 0"):
        prepare_dataset(cfg_for(folder, invalid_rows="fail"), tokenizer)


def test_dataset_problem_cheap_checks(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    (tmp_path / "nodata").mkdir()
    assert dataset_problem(str(tmp_path / "none.jsonl")) == \
        f"{tmp_path / 'none.jsonl'}: no such file or folder"
    assert dataset_problem(str(empty)) == f"{empty}: no rows (the dataset is empty)"
    assert "folder has no .jsonl" in dataset_problem(str(tmp_path / "nodata"))
    assert "unknown builtin" in dataset_problem("builtin:nothing")
    assert dataset_problem("builtin:osstune-sample") is None
    assert dataset_problem("someone/some-dataset") is None  # a hub id: read later
