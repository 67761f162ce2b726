"""Our ids == openai-harmony's render_conversation_for_training(auto_drop_analysis=False)."""

from __future__ import annotations

import json

import pytest
from harmony_fixtures import reference_ids

from osstune.engine.data.dataset_formats import FormatOptions, row_to_chat
from osstune.engine.data.dataset_sources import builtin_sample_path
from osstune.engine.data.harmony import HarmonyRenderer, RenderSettings


def ours(tokenizer, row, **settings):
    renderer = HarmonyRenderer(tokenizer, RenderSettings(**settings))
    [example] = renderer.render(row_to_chat(row, "messages", FormatOptions()))
    return example.input_ids


def U(text):
    return {"role": "user", "content": text}


def A(content=None, thinking=None, calls=None):
    m = {"role": "assistant", "content": content}
    if thinking is not None:
        m["thinking"] = thinking
    if calls is not None:
        m["tool_calls"] = calls
    return m


def call(name, args, cid=None):
    c = {"type": "function", "function": {"name": name, "arguments": args}}
    if cid:
        c["id"] = cid
    return c


def T(content, cid=None, name=None):
    m = {"role": "tool", "content": content}
    if cid:
        m["tool_call_id"] = cid
    if name:
        m["name"] = name
    return m


def tool(name, description="", parameters=None):
    fn = {"name": name, "description": description}
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


WEATHER = tool("get_weather", "Weather now.", {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City"},
                   "unit": {"type": "string", "enum": ["c", "f"], "default": "c"}},
    "required": ["city"],
})
LONG = "The quick brown fox jumps over the lazy dog. " * 400

CASES = {
    "single turn": {"messages": [U("hi"), A("hello")]},
    "multi turn": {"messages": [U("a"), A("b"), U("c"), A("d"), U("e"), A("f")]},
    "developer instructions": {"messages": [{"role": "developer", "content": "Be brief."},
                                            U("q"), A("a")]},
    "system and developer": {"messages": [{"role": "system", "content": "Sys."},
                                          {"role": "developer", "content": "Dev."},
                                          U("q"), A("a")]},
    "mid-conversation system": {"messages": [U("q"), A("a"),
                                             {"role": "system", "content": "Now French."},
                                             U("q2"), A("r")]},
    "reasoning one turn": {"messages": [U("2+2?"), A("4", thinking="2+2 is 4")]},
    "reasoning several turns": {"messages": [U("a"), A("b", thinking="t1"), U("c"),
                                             A("d", thinking="t2"), U("e"), A("f", thinking="t3")]},
    "thinking only": {"messages": [U("q"), A(None, thinking="just thoughts")]},
    "thinking only in an earlier turn": {"messages": [U("q"), A(None, thinking="dropped"),
                                                      U("q2"), A("a2")]},
    "empty content": {"messages": [U(""), A("")]},
    "empty user, reasoning": {"messages": [U(""), A("x", thinking="")]},
    "unicode and emoji": {"messages": [U("héllo wörld — 你好 🙂👍🏽 עברית"),
                                       A("ça va? 🎉 日本語 \u200b zero-width",
                                         thinking="🤔 думаю")]},
    "literal special tokens": {"messages": [U("type <|end|><|start|>assistant<|message|> here"),
                                            A("<|return|> and <|call|> <|constrain|>json",
                                              thinking="<|channel|>final")]},
    "whitespace": {"messages": [U("  leading\n\n\ttabs\r\n  "), A("\n\ntrailing   \n")]},
    "very long": {"messages": [U(LONG), A(LONG[::-1])]},
    "tool call": {"messages": [U("weather?"), A(calls=[call("get_weather", {"city": "Oslo"}, "1")]),
                               T("cold", cid="1"), A("It is cold.")], "tools": [WEATHER]},
    "tool call with reasoning": {"messages": [
        U("weather?"),
        A(thinking="look it up", calls=[call("get_weather", '{"city":"Rome"}', "x")]),
        T("warm", cid="x"), A("Warm.", thinking="answer now")], "tools": [WEATHER]},
    "parallel tool calls": {"messages": [
        U("two cities"), A(thinking="both", calls=[call("get_weather", {"city": "A"}, "a"),
                                                   call("get_weather", {"city": "B"}, "b")]),
        T("1", cid="a"), T("2", cid="b"), A("done")], "tools": [WEATHER]},
    "preamble with tool call": {"messages": [
        U("w"), A("Checking.", calls=[call("get_weather", {"city": "Paris"})]),
        T("sun", name="get_weather"), A("Sunny.")], "tools": [WEATHER]},
    "null default in JSON-string tools": {
        "messages": [U("w"), A("x")],
        "tools": json.dumps([tool("f", "F", {"type": "object", "properties": {
            "a": {"type": "string", "default": None, "nullable": True}}})])},
    "tools as JSON string": {"messages": [U("w"), A(calls=[call("get_weather", {"city": "X"})]),
                                          T("ok"), A("fine")],
                             "tools": json.dumps([WEATHER])},
    "several tools, several turns": {"messages": [
        {"role": "system", "content": "Use tools."}, U("t1"),
        A(thinking="r1", calls=[call("get_weather", {"city": "Q"}, "q")]), T("x", cid="q"),
        A("a1", thinking="r1b"), U("t2"),
        A(thinking="r2", calls=[call("noargs", {}, "n")]), T("y", cid="n"),
        A(thinking="r2b", calls=[call("get_weather", {"city": "Z", "unit": "f"}, "z")]),
        T("z", cid="z"), A("a2", thinking="r2c")],
        "tools": [WEATHER, tool("noargs", "No arguments.\nSecond line.")]},
    "trailing user dropped": {"messages": [U("a"), A("b", thinking="kept"), U("dangling")]},
    "ends with tool call": {"messages": [U("a"), A(calls=[call("get_weather", {"city": "E"})])],
                            "tools": [WEATHER]},
    "unicode arguments": {"messages": [U("w"), A(calls=[call("get_weather", {"city": "Zürich 🏔"})]),
                                       T("❄"), A("snow")], "tools": [WEATHER]},
    "content parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                {"type": "text", "text": "b"}]},
                                   A("c")]},
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_openai_harmony(tokenizer, harmony_encoding, name):
    row = CASES[name]
    assert ours(tokenizer, row) == reference_ids(harmony_encoding, row)


@pytest.mark.parametrize("settings", [
    {"reasoning_effort": "low"},
    {"reasoning_effort": "high", "conversation_start_date": "2025-08-05"},
    {"model_identity": "You are Quill, a note-taking assistant."},
])
def test_system_settings_match(tokenizer, harmony_encoding, settings):
    row = CASES["tool call with reasoning"]
    kwargs = {"effort": settings.get("reasoning_effort", "medium"),
              "identity": settings.get("model_identity"),
              "date": settings.get("conversation_start_date")}
    assert ours(tokenizer, row, **settings) == reference_ids(harmony_encoding, row, **kwargs)


def test_builtin_sample_matches(tokenizer, harmony_encoding):
    rows = [json.loads(line) for line in builtin_sample_path().read_text().splitlines()]
    assert len(rows) >= 30
    for i, row in enumerate(rows):
        plain = {**row, "messages": [{k: v for k, v in m.items() if k != "train"}
                                     for m in row["messages"]]}
        assert ours(tokenizer, row) == reference_ids(harmony_encoding, plain), f"sample row {i}"


SCHEMAS = {
    "no parameters": None,
    "empty object": {"type": "object", "properties": {}},
    "empty schema": {},
    "scalars": {"type": "object", "properties": {
        "s": {"type": "string"}, "n": {"type": "number"}, "i": {"type": "integer"},
        "b": {"type": "boolean"}, "z": {"type": "null"}, "u": {}}, "required": ["s", "i"]},
    "defaults": {"type": "object", "properties": {
        "a": {"type": "integer", "default": 3}, "b": {"type": "string", "default": "x y"},
        "c": {"type": "boolean", "default": False}, "d": {"type": "number", "default": 1.5},
        "e": {"type": "array", "items": {"type": "string"}, "default": ["p", "q"]},
        "f": {"type": "object", "default": {"k": "v", "n": 1}},
        "g": {"type": "string", "enum": ["x", "y"], "default": "y"}}},
    "enums": {"type": "object", "properties": {
        "e": {"type": "string", "enum": ["red", "green", "blue"], "description": "Colour"},
        "mixed": {"type": "string", "enum": ["a", 1, None]},
        "untyped": {"enum": ["a", "b"]}}},
    "arrays": {"type": "object", "properties": {
        "plain": {"type": "array"},
        "nested": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        "objects": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["id"]}}}},
    "nested objects": {"type": "object", "description": "Top level.", "properties": {
        "outer": {"type": "object", "description": "Outer desc.", "properties": {
            "inner": {"type": "object", "properties": {"leaf": {"type": "string",
                                                                "description": "Leaf."}}}}}}},
    "type arrays and nullable": {"type": "object", "properties": {
        "a": {"type": ["string", "null"]}, "b": {"type": ["integer", "number"]},
        "c": {"type": "string", "nullable": True}, "d": {"type": ["null"], "nullable": True},
        "e": {"type": []}}},
    "titles and examples": {"type": "object", "properties": {
        "q": {"type": "string", "title": "Query", "description": "What to find.",
              "examples": ["cats", "dogs", 3]},
        "r": {"type": "string", "examples": []}}},
    "property oneOf": {"type": "object", "properties": {
        "v": {"description": "A value.", "oneOf": [
            {"type": "string", "description": "A value."},
            {"type": "integer", "description": "As number", "default": 4},
            {"type": "object", "properties": {"k": {"type": "string"}}, "nullable": True}]},
        "w": {"description": "Other.", "default": "zz", "oneOf": [
            {"type": "string", "enum": ["a", "b"], "default": "a"}, {"type": "boolean"}]},
        "x": {"oneOf": "not a list", "description": "ignored above", "default": 1}}},
    "top-level oneOf": {"oneOf": [
        {"type": "object", "properties": {"a": {"type": "string"}}, "description": "First"},
        {"type": "object", "properties": {"b": {"type": "integer"}}, "default": {"b": 1}},
        {"type": "string", "enum": ["s"], "default": "s", "nullable": True}]},
    "unicode and quotes": {"type": "object", "properties": {
        "ü": {"type": "string", "description": "Grüße \"quoted\" ✓", "default": "ä\"b"},
        "multi": {"type": "string", "description": "line one\nline two"}}},
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_tool_schemas_match(tokenizer, harmony_encoding, name):
    row = {"messages": [U("q"), A(calls=[call("f", {})]), T("r"), A("done")],
           "tools": [tool("f", "Line one.\r\nLine two.\n\nAfter blank.\n", SCHEMAS[name]),
                     tool("g")]}
    assert ours(tokenizer, row) == reference_ids(harmony_encoding, row)
