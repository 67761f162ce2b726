"""Rows -> Chat: OpenAI messages, Axolotl chat_template keys, ShareGPT, tools; row errors."""

from __future__ import annotations

import json

import pytest

from osstune.engine.data.chat import RowError
from osstune.engine.data.dataset_formats import (
    FormatOptions,
    detect_format,
    parse_tools,
    row_to_chat,
)

OPTS = FormatOptions()


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


BAD_ROWS = {
    "unknown role": (
        {"messages": [{"role": "narrator", "content": "x"}, A("y")]},
        "message 0: unknown role 'narrator' (expected system, developer, user, assistant or tool)"),
    "tool result without a call": (
        {"messages": [U("x"), {"role": "tool", "content": "y"}, A("z")]},
        "message 1: tool result without a preceding tool call"),
    "no assistant message": ({"messages": [U("x")]}, "no assistant message"),
    "arguments not JSON": (
        {"messages": [U("x"), {"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": "{oops"}}]}]},
        "message 1: tool call 0 (f): arguments are not JSON: Expecting property name enclosed "
        "in double quotes: line 1 column 2 (char 1)"),
    "content of the wrong type": (
        {"messages": [U(12), A("z")]}, "message 0 (user): content must be a string, got int"),
    "no messages": ({"messages": []}, "no messages in 'messages'"),
    "tools not valid": ({"messages": [U("x"), A("y")], "tools": "[{"},
                        "tools are not valid JSON: Expecting property name enclosed in double "
                        "quotes: line 1 column 3 (char 2)"),
    "reasoning effort not valid": ({"messages": [U("x"), A("y")], "reasoning_effort": "max"},
                                   "reasoning_effort 'max' is not low, medium or high"),
}


@pytest.mark.parametrize("reason", list(BAD_ROWS))
def test_row_errors_have_reason_and_exact_message(reason):
    row, message = BAD_ROWS[reason]
    with pytest.raises(RowError) as info:
        row_to_chat(row, "messages", OPTS)
    assert info.value.reason == reason
    assert str(info.value) == message


def test_more_wrong_types():
    cases = [
        ({"messages": [U("x"), {"role": "assistant", "content": "y", "thinking": ["a"]}]},
         "message 1 (assistant): thinking must be a string, got list"),
        ({"messages": [U("x"), {"role": "assistant", "tool_calls": "f()"}]},
         "message 1: tool_calls must be a list, got str"),
        ({"messages": ["hello", A("y")]}, "message 0: must be an object, got str"),
        ({"messages": {"role": "user"}}, "messages must be a list of messages, got dict"),
        ({"messages": [U("x"), {"role": "assistant", "content": "y", "train": "yes"}]},
         "message 1: train must be true or false, got str"),
        ({"messages": [U("x"), {"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": 3}}]}]},
         "message 1: tool call 0 (f): arguments must be an object or a JSON string, got int"),
        ({"messages": [U("x"), {"role": "assistant", "tool_calls": [{"function": {}}]}]},
         "message 1: tool call 0 has no function name"),
    ]
    for row, message in cases:
        with pytest.raises(RowError) as info:
            row_to_chat(row, "messages", OPTS)
        assert str(info.value) == message


def test_openai_messages_with_tools_and_thinking():
    row = {"messages": [
        {"role": "system", "content": "S"},
        U([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
        {"role": "assistant", "content": None, "reasoning_content": "why",
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": {"x": 1, "y": None}}},
                        {"id": "c2", "function": {"name": "g", "arguments": '{"k": "v"}'}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "G"},
        {"role": "tool", "tool_call_id": "c1", "content": "F"},
        A("done"),
    ], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
                 {"name": "g", "description": "G tool"}]}
    chat = row_to_chat(row, "messages", OPTS)
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool", "tool",
                                               "assistant"]
    assert chat.messages[1].content == "ab"
    call_f, call_g = chat.messages[2].tool_calls
    assert call_f.arguments == '{"x": 1}'  # Arrow-style null padding dropped, dict serialised once
    assert call_g.arguments == '{"k": "v"}'  # a JSON string is kept verbatim, never re-encoded
    assert chat.messages[2].thinking == "why"
    assert [m.name for m in chat.messages[3:5]] == ["g", "f"]  # matched by tool_call_id
    assert [t.name for t in chat.tools] == ["f", "g"] and chat.tools[1].description == "G tool"


def test_train_flags():
    row = {"messages": [U("x"), {"role": "assistant", "content": "a", "training": False},
                        {"role": "user", "content": "y", "weight": 1},
                        {"role": "assistant", "content": "b", "weight": 0}]}
    chat = row_to_chat(row, "messages", OPTS)
    assert [m.train for m in chat.messages] == [None, False, True, False]
    row["messages"][3]["weight"] = 0.5
    with pytest.raises(RowError, match=r"^message 3: weight must be 0 or 1, got 0\.5$"):
        row_to_chat(row, "messages", OPTS)


def test_null_padding_dropped_only_from_structured_tools():
    params = {"type": "object", "properties": {"a": {"type": "string", "default": None}}}
    tools = [{"name": "f", "parameters": params}]
    assert parse_tools(tools)[0].parameters == {"type": "object",
                                                "properties": {"a": {"type": "string"}}}
    assert parse_tools(json.dumps(tools))[0].parameters == params


def test_tool_results_matched_in_call_order_without_ids():
    row = {"messages": [U("x"), {"role": "assistant", "tool_calls": [
        {"function": {"name": "a"}}, {"function": {"name": "b"}}]},
        {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}, A("y")]}
    chat = row_to_chat(row, "messages", OPTS)
    assert [m.name for m in chat.messages[2:4]] == ["a", "b"]
    assert chat.messages[1].tool_calls[0].arguments == "{}"


def test_unknown_tool_call_id():
    row = {"messages": [U("x"), {"role": "assistant", "tool_calls": [
        {"id": "1", "function": {"name": "a"}}]},
        {"role": "tool", "tool_call_id": "9", "content": "1"}, A("y")]}
    with pytest.raises(RowError, match="tool_call_id '9' but no earlier call has that id"):
        row_to_chat(row, "messages", OPTS)


def test_axolotl_chat_template_keys():
    opts = FormatOptions(
        field_messages="conversation",
        message_property_mappings={"role": "speaker", "content": "text"},
        roles={"user": ["customer"], "assistant": ["agent"]},
        field_thinking="scratchpad",
        field_tools="functions",
    )
    row = {"conversation": [{"speaker": "customer", "text": "hi"},
                            {"speaker": "agent", "text": "hello", "scratchpad": "greet"}],
           "functions": [{"name": "f"}]}
    assert detect_format(list(row), opts) == "messages"
    chat = row_to_chat(row, "messages", opts)
    assert [(m.role, m.content, m.thinking) for m in chat.messages] == [
        ("user", "hi", None), ("assistant", "hello", "greet")]
    assert [t.name for t in chat.tools] == ["f"]


def test_nanobit_text_tools_layout_tools_as_json_string():
    tools = [{"type": "function", "function": {
        "name": "get_stock_price", "description": "Get the current stock price",
        "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}},
                       "required": ["symbol"]}}}]
    row = {"messages": [
        {"role": "user", "content": "Price of AAPL?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
            "name": "get_stock_price", "arguments": {"symbol": "AAPL"}}}]},
        {"role": "tool", "name": "get_stock_price", "content": "{\"price\": 150.75}"},
        {"role": "assistant", "content": "AAPL is at $150.75."}],
        "tools": json.dumps(tools)}
    chat = row_to_chat(row, "messages", OPTS)
    assert chat.tools[0].parameters["required"] == ["symbol"]
    assert chat.messages[2].name == "get_stock_price"


def test_sharegpt():
    row = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
                             {"from": "gpt", "value": "a"}]}
    assert detect_format(list(row), OPTS) == "sharegpt"
    chat = row_to_chat(row, "sharegpt", OPTS)
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "S"), ("user", "q"), ("assistant", "a")]


def test_sharegpt_messages_under_messages_column():
    row = {"messages": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    chat = row_to_chat(row, "messages", OPTS)
    assert [m.role for m in chat.messages] == ["user", "assistant"]


def test_detect_format_without_messages():
    with pytest.raises(RowError, match="no 'messages' or 'conversations' column"):
        detect_format(["text"], OPTS)


def test_parse_tools_errors():
    with pytest.raises(RowError, match="tools must be a list, got dict"):
        parse_tools({"name": "f"})
    with pytest.raises(RowError, match="tool 0 has no name"):
        parse_tools([{"description": "x"}])
    assert parse_tools(None) == [] and parse_tools("") == []
