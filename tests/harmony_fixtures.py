"""An independent reference path: OpenAI-format rows -> openai-harmony messages -> ids.

Written separately from engine/data/harmony.py on purpose (it shares no code with it), so the
equality tests compare two implementations: ours, and openai-harmony's Rust renderer fed by this
converter with the same drop rule (analysis of assistant messages before the last user message
removed).
"""

from __future__ import annotations

import json
from typing import Any

from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    Role,
    SystemContent,
    ToolDescription,
)

EFFORTS = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM,
           "high": ReasoningEffort.HIGH}


def _text(raw: Any) -> str:
    if isinstance(raw, list):  # OpenAI content parts: one text
        return "".join(part["text"] for part in raw)
    return raw or ""


def _args(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    return json.dumps({} if raw is None else raw, ensure_ascii=False)


def _tools(raw: Any) -> list[ToolDescription]:
    if isinstance(raw, str):
        raw = json.loads(raw)
    out = []
    for tool in raw or []:
        fn = tool.get("function", tool)
        out.append(ToolDescription.new(fn["name"], fn.get("description") or "",
                                       parameters=fn.get("parameters")))
    return out


def _system_and_developer(msgs: list[dict[str, Any]], tools: list[ToolDescription], effort: str,
                          identity: str | None, date: str | None) -> tuple[list[Message], int]:
    """The system message, and the developer message made of the leading system/developer
    messages and the tools; also how many leading messages it took."""
    system = SystemContent.new().with_reasoning_effort(EFFORTS[effort])
    if identity is not None:
        system = system.with_model_identity(identity)
    if date is not None:
        system = system.with_conversation_start_date(date)
    out = [Message.from_role_and_content(Role.SYSTEM, system)]
    lead = 0
    while lead < len(msgs) and msgs[lead]["role"] in ("system", "developer"):
        lead += 1
    instructions = "\n\n".join(m["content"] for m in msgs[:lead] if m.get("content"))
    if instructions or tools:
        dev = DeveloperContent.new()
        if instructions:
            dev = dev.with_instructions(instructions)
        if tools:
            dev = dev.with_function_tools(tools)
        out.append(Message.from_role_and_content(Role.DEVELOPER, dev))
    return out, lead


def _tool_result(m: dict[str, Any], calls_by_id: dict[str, str], pending: list[str]) -> Message:
    name = m.get("name") or calls_by_id.get(m.get("tool_call_id") or "") or pending[0]
    if name in pending:
        pending.remove(name)
    return (Message.from_author_and_content(Author.new(Role.TOOL, f"functions.{name}"),
                                            m.get("content") or "")
            .with_channel("commentary").with_recipient("assistant"))


def _assistant(m: dict[str, Any], keep_thinking: bool, calls_by_id: dict[str, str],
               pending: list[str]) -> list[Message]:
    thinking, calls, content = m.get("thinking"), m.get("tool_calls") or [], m.get("content")
    parts = []
    if thinking and keep_thinking:
        parts.append(Message.from_role_and_content(Role.ASSISTANT, thinking)
                     .with_channel("analysis"))
    if not calls:  # an answer without tool calls always has its final, even an empty one
        return [*parts, Message.from_role_and_content(Role.ASSISTANT, content or "")
                .with_channel("final")]
    if content:
        parts.append(Message.from_role_and_content(Role.ASSISTANT, content)
                     .with_channel("commentary"))
    pending.clear()
    for call in calls:
        fn = call.get("function", call)
        if call.get("id"):
            calls_by_id[call["id"]] = fn["name"]
        pending.append(fn["name"])
        parts.append(Message.from_role_and_content(Role.ASSISTANT, _args(fn.get("arguments")))
                     .with_channel("commentary")
                     .with_recipient(f"functions.{fn['name']}")
                     .with_content_type("<|constrain|>json"))
    return parts


def reference_messages(row: dict[str, Any], effort: str = "medium",
                       identity: str | None = None, date: str | None = None) -> list[Message]:
    msgs = list(row["messages"])
    while msgs and msgs[-1]["role"] != "assistant":
        msgs.pop()
    last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=-1)
    out, lead = _system_and_developer(msgs, _tools(row.get("tools")),
                                      row.get("reasoning_effort") or effort, identity, date)
    calls_by_id: dict[str, str] = {}
    pending: list[str] = []
    for i, m in enumerate(msgs[lead:], start=lead):
        role = m["role"]
        if role == "user":
            out.append(Message.from_role_and_content(Role.USER, _text(m.get("content"))))
        elif role in ("system", "developer"):
            dev = DeveloperContent.new().with_instructions(m.get("content") or "")
            out.append(Message.from_role_and_content(Role.DEVELOPER, dev))
        elif role == "tool":
            out.append(_tool_result(m, calls_by_id, pending))
        else:
            out.extend(_assistant(m, i > last_user, calls_by_id, pending))
    return out


def reference_ids(encoding: Any, row: dict[str, Any], **kwargs: Any) -> list[int]:
    conv = Conversation.from_messages(reference_messages(row, **kwargs))
    return list(encoding.render_conversation_for_training(
        conv, RenderConversationConfig(auto_drop_analysis=False)))
