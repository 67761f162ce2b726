"""The chat prompt equals openai-harmony's render_conversation_for_completion; generated ids are
split into channels as they stream."""

from __future__ import annotations

import pytest

from osstune.engine.data.chat import Chat, ChatMessage
from osstune.engine.data.harmony import RenderSettings
from osstune.engine.data.harmony_chat import HarmonyStream, parse_header, render_prompt

CONVERSATIONS = {
    "one user message": ([("user", "hi")], "medium", None),
    "developer and high effort": ([("developer", "Be brief."), ("user", "2+2?")], "high", None),
    "history": ([("user", "a"), ("assistant", "b"), ("user", "c")], "low", None),
    "developer from --developer, unicode": ([("user", "héllo 🙂 <|end|>")], "medium", "Say yes."),
}


def _reference(encoding, messages, effort, developer):
    from openai_harmony import (
        Conversation,
        DeveloperContent,
        Message,
        ReasoningEffort,
        Role,
        SystemContent,
    )

    efforts = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM,
               "high": ReasoningEffort.HIGH}
    out = [Message.from_role_and_content(
        Role.SYSTEM, SystemContent.new().with_reasoning_effort(efforts[effort]))]
    if developer:
        out.append(Message.from_role_and_content(
            Role.DEVELOPER, DeveloperContent.new().with_instructions(developer)))
    for role, text in messages:
        if role == "developer":
            out.append(Message.from_role_and_content(
                Role.DEVELOPER, DeveloperContent.new().with_instructions(text)))
        elif role == "user":
            out.append(Message.from_role_and_content(Role.USER, text))
        else:
            out.append(Message.from_role_and_content(Role.ASSISTANT, text).with_channel("final"))
    conv = Conversation.from_messages(out)
    return list(encoding.render_conversation_for_completion(conv, Role.ASSISTANT))


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_prompt_equals_openai_harmony(name, tokenizer, harmony_encoding):
    messages, effort, developer = CONVERSATIONS[name]
    chat_messages = ([ChatMessage("developer", developer)] if developer else []) + [
        ChatMessage(role, text) for role, text in messages]
    for i, m in enumerate(chat_messages):
        m.index = i
    ours = render_prompt(tokenizer, Chat(chat_messages), RenderSettings(reasoning_effort=effort))
    assert ours == _reference(harmony_encoding, messages, effort, developer)


def _feed(tokenizer, text):
    stream = HarmonyStream(tokenizer)
    deltas = []
    for token in tokenizer.encode(text, add_special_tokens=False):
        deltas += stream.feed(token)
    return stream, deltas


def test_channels_stream_separately(tokenizer):
    stream, deltas = _feed(tokenizer, "<|channel|>analysis<|message|>Think ü 🙂 hard.<|end|>"
                                      "<|start|>assistant<|channel|>final<|message|>Yes!<|return|>")
    assert stream.done
    assert [(m.channel, m.text) for m in stream.messages] == [
        ("analysis", "Think ü 🙂 hard."), ("final", "Yes!")]
    assert stream.final_text == "Yes!"
    text_deltas = [d for d in deltas if not (d.start or d.end)]
    assert len(text_deltas) > 2  # streamed piece by piece, never a broken character
    assert all("\ufffd" not in d.text for d in text_deltas)
    assert [(d.channel, d.start, d.end) for d in deltas if d.start or d.end] == [
        ("analysis", True, False), ("analysis", False, True),
        ("final", True, False), ("final", False, True)]


def test_tool_call_stops_with_its_recipient(tokenizer):
    stream, deltas = _feed(tokenizer, "<|channel|>commentary to=functions.get_weather "
                                      '<|constrain|>json<|message|>{"city":"Paris"}<|call|>')
    assert stream.done
    [msg] = stream.messages
    assert (msg.channel, msg.recipient, msg.text) == (
        "commentary", "functions.get_weather", '{"city":"Paris"}')
    assert deltas[0].start and deltas[0].recipient == "functions.get_weather"


def test_token_limit_and_unparsed_output(tokenizer):
    stream, _ = _feed(tokenizer, "<|channel|>final<|message|>cut he")
    assert not stream.done
    closing = stream.finish()
    assert closing[-1].end and stream.messages[-1].text == "cut he"
    junk, _ = _feed(tokenizer, "random words with no header")
    [*_, last] = junk.finish()
    assert last.end and junk.messages == [junk.messages[0]]
    assert (junk.messages[0].channel, junk.messages[0].text) == (
        "unparsed", "random words with no header")


def test_parse_header():
    assert parse_header("<|channel|>analysis") == ("analysis", None)
    assert parse_header("<|start|>assistant<|channel|>final") == ("final", None)
    assert parse_header(" to=functions.f<|channel|>commentary <|constrain|>json") == (
        "commentary", "functions.f")
    assert parse_header("") == ("final", None)
