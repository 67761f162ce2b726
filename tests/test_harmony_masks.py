"""Which tokens are trained: the default rule, roles_to_train, train_turns and `train: false`."""

from __future__ import annotations

import pytest

from osstune.engine.data.chat import RowError
from osstune.engine.data.dataset_formats import FormatOptions, row_to_chat
from osstune.engine.data.harmony import IGNORE_INDEX, HarmonyRenderer, RenderSettings, plan_examples


def render(tokenizer, row, **settings):
    renderer = HarmonyRenderer(tokenizer, RenderSettings(**settings))
    return renderer.render(row_to_chat(row, "messages", FormatOptions()))


def trained_spans(tokenizer, example):
    """The trained tokens as decoded text, one string per contiguous trained run."""
    spans, run = [], []
    for tid, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == tid
            run.append(tid)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    return spans


def U(text):
    return {"role": "user", "content": text}


def A(content=None, thinking=None, calls=None, **extra):
    m = {"role": "assistant", "content": content, **extra}
    if thinking is not None:
        m["thinking"] = thinking
    if calls is not None:
        m["tool_calls"] = [{"id": cid, "function": {"name": name, "arguments": args}}
                           for cid, name, args in calls]
    return m


def T(content, cid):
    return {"role": "tool", "content": content, "tool_call_id": cid}


def test_final_answer_trained_from_channel_to_return(tokenizer):
    [ex] = render(tokenizer, {"messages": [U("hi"), A("hello")]})
    assert trained_spans(tokenizer, ex) == ["<|channel|>final<|message|>hello<|return|>"]


def test_start_after_end_is_generated_but_after_call_or_tool_is_prompt(tokenizer):
    row = {"messages": [
        U("q"),
        A(thinking="think", calls=[("1", "f", {"x": 1}), ("2", "g", {})]),
        T("r1", "1"), T("r2", "2"),
        A("answer", thinking="more"),
    ]}
    [ex] = render(tokenizer, row)
    assert trained_spans(tokenizer, ex) == [
        # after the user message: <|start|>assistant is prompt
        "<|channel|>analysis<|message|>think<|end|>"
        # after <|end|>: the model generated <|start|>assistant itself
        '<|start|>assistant to=functions.f<|channel|>commentary <|constrain|>json<|message|>'
        '{"x": 1}<|call|>',
        # after <|call|> generation stopped: the next header start is prompt
        ' to=functions.g<|channel|>commentary <|constrain|>json<|message|>{}<|call|>',
        # after the tool results: prompt again
        "<|channel|>analysis<|message|>more<|end|>"
        "<|start|>assistant<|channel|>final<|message|>answer<|return|>",
    ]


def test_earlier_turn_final_ends_in_trained_end_and_reasoning_is_dropped(tokenizer):
    row = {"messages": [U("a"), A("b", thinking="old"), U("c"), A("d", thinking="new")]}
    [ex] = render(tokenizer, row)
    text = tokenizer.decode(ex.input_ids)
    assert "old" not in text and "new" in text
    assert trained_spans(tokenizer, ex) == [
        "<|channel|>final<|message|>b<|end|>",
        "<|channel|>analysis<|message|>new<|end|><|start|>assistant<|channel|>final<|message|>"
        "d<|return|>",
    ]


def test_no_non_assistant_token_trained_by_default(tokenizer):
    row = {"messages": [{"role": "system", "content": "S"}, U("u"), A(calls=[("1", "f", {})]),
                        T("t", "1"), A("x")],
           "tools": [{"name": "f", "description": "F"}]}
    [ex] = render(tokenizer, row)
    for label, role in zip(ex.labels, ex.role, strict=True):
        if label != IGNORE_INDEX:
            assert role == "assistant"


def test_roles_to_train_adds_user_messages(tokenizer):
    [ex] = render(tokenizer, {"messages": [U("question"), A("answer")]},
                  roles_to_train=("user", "assistant"))
    assert trained_spans(tokenizer, ex) == [
        "user<|message|>question<|end|>", "<|channel|>final<|message|>answer<|return|>"]


def test_roles_to_train_without_assistant_trains_nothing_there(tokenizer):
    [ex] = render(tokenizer, {"messages": [U("question"), A("answer")]}, roles_to_train=("user",))
    assert trained_spans(tokenizer, ex) == ["user<|message|>question<|end|>"]


def test_per_message_train_false(tokenizer):
    row = {"messages": [U("a"), A("skip me", train=False), U("b"), A("keep me")]}
    [ex] = render(tokenizer, row)
    assert trained_spans(tokenizer, ex) == ["<|channel|>final<|message|>keep me<|return|>"]


def test_per_message_train_true_on_user(tokenizer):
    row = {"messages": [{"role": "user", "content": "u", "train": True}, A("a")]}
    [ex] = render(tokenizer, row)
    assert trained_spans(tokenizer, ex)[0] == "user<|message|>u<|end|>"


def test_train_turns_last(tokenizer):
    row = {"messages": [U("a"), A("b"), U("c"), A("d", thinking="t")]}
    [ex] = render(tokenizer, row, train_turns="last")
    assert trained_spans(tokenizer, ex) == [
        "<|channel|>analysis<|message|>t<|end|><|start|>assistant<|channel|>final<|message|>"
        "d<|return|>"]


def test_train_turns_expand_keeps_each_turns_reasoning(tokenizer):
    row = {"messages": [U("a"), A("b", thinking="r1"), U("c"), A("d", thinking="r2"),
                        U("e"), A("f", thinking="r3")]}
    examples = render(tokenizer, row, train_turns="expand")
    assert [e.turn for e in examples] == [1, 2, 3]
    for turn, ex in zip((1, 2, 3), examples, strict=True):
        text = tokenizer.decode(ex.input_ids)
        own = f"r{turn}"
        assert own in text
        assert all(f"r{k}" not in text for k in (1, 2, 3) if k != turn)
        answer = "bdf"[turn - 1]
        assert trained_spans(tokenizer, ex) == [
            f"<|channel|>analysis<|message|>{own}<|end|><|start|>assistant<|channel|>final"
            f"<|message|>{answer}<|return|>"]
    # the last expanded example is the whole conversation rendered as `last` would
    [last] = render(tokenizer, row, train_turns="last")
    assert examples[-1].input_ids == last.input_ids and examples[-1].labels == last.labels


def test_expand_with_tools_keeps_analysis_between_calls(tokenizer):
    row = {"messages": [U("a"), A(thinking="p1", calls=[("1", "f", {})]), T("x", "1"),
                        A("b", thinking="p2"), U("c"), A("d")],
           "tools": [{"name": "f"}]}
    first, second = render(tokenizer, row, train_turns="expand")
    assert "p1" in tokenizer.decode(first.input_ids) and "p2" in tokenizer.decode(first.input_ids)
    assert "p1" not in tokenizer.decode(second.input_ids)
    assert trained_spans(tokenizer, second) == ["<|channel|>final<|message|>d<|return|>"]


def test_literal_special_text_is_not_a_special_token(tokenizer):
    [ex] = render(tokenizer, {"messages": [U("<|end|>"), A("<|return|>")]})
    specials = {200002, 200006, 200007, 200008, 200005}
    user = [t for t, r in zip(ex.input_ids, ex.role, strict=True) if r == "user"]
    assert user[0] == 200006 and user[-1] == 200007
    assert user[2] == 200008 and not specials & set(user[3:-1])
    assert tokenizer.decode(ex.input_ids).count("<|end|>") == 3  # system, the literal, user end


def test_message_index_points_at_source_message(tokenizer):
    row = {"messages": [{"role": "developer", "content": "D"}, U("u"), A("a")]}
    [ex] = render(tokenizer, row)
    by_role = {}
    for idx, role in zip(ex.message_index, ex.role, strict=True):
        by_role.setdefault(role, set()).add(idx)
    assert by_role == {"system": {-1}, "developer": {0}, "user": {1}, "assistant": {2}}


def test_no_assistant_message_is_a_row_error():
    from osstune.engine.data.chat import Chat, ChatMessage

    with pytest.raises(RowError, match="no assistant message"):
        plan_examples(Chat([ChatMessage("user", "x")]), RenderSettings())


def test_bad_settings_rejected():
    with pytest.raises(ValueError, match="train_turns"):
        RenderSettings(train_turns="some")
    with pytest.raises(ValueError, match="reasoning_effort"):
        RenderSettings(reasoning_effort="max")
