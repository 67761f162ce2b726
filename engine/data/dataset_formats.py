"""Dataset rows -> `Chat`: OpenAI messages, Axolotl `chat_template` keys, ShareGPT (with its
top-level `system` and LLaMA-Factory's `function_call` / `observation` turns), Alpaca, tool layouts.

Every problem with a row raises `RowError(reason, detail)`; the reason is one of REASONS so skip
counts group cleanly, the detail names the message and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from osstune.engine.data.chat import ROLES, Chat, ChatMessage, RowError, ToolCall
from osstune.engine.data.harmony_system import REASONING_EFFORTS, ToolSpec

UNKNOWN_ROLE = "unknown role"
TOOL_WITHOUT_CALL = "tool result without a call"
NO_ASSISTANT = "no assistant message"
ARGUMENTS_NOT_JSON = "arguments not JSON"
WRONG_CONTENT_TYPE = "content of the wrong type"
TOO_LONG = "longer than sequence_len"
NO_MESSAGES = "no messages"
BAD_TOOLS = "tools not valid"
BAD_EFFORT = "reasoning effort not valid"
NOT_JSON = "row not valid JSON"
NO_TRAINED_TOKENS = "no trained tokens"
REASONS = (UNKNOWN_ROLE, TOOL_WITHOUT_CALL, NO_ASSISTANT, ARGUMENTS_NOT_JSON, WRONG_CONTENT_TYPE,
           TOO_LONG, NO_MESSAGES, BAD_TOOLS, BAD_EFFORT, NOT_JSON, NO_TRAINED_TOKENS)

# Names other trainers use for the five harmony roles (the dataset's `roles` mapping adds more).
ROLE_ALIASES = {
    "system": "system", "developer": "developer", "user": "user", "assistant": "assistant",
    "tool": "tool", "human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant",
    "chatgpt": "assistant", "function": "tool", "ipython": "tool", "observation": "tool",
    "function_response": "tool", "tool_response": "tool",
}
# LLaMA-Factory's ShareGPT turn holding an assistant tool call as JSON: {"name", "arguments"}.
FUNCTION_CALL_ROLES = ("function_call",)
THINKING_FALLBACKS = ("thinking", "reasoning_content", "reasoning")
ALPACA_COLUMNS = ("instruction", "output")
TRAIN_KEYS = ("train", "training")


@dataclass(frozen=True)
class FormatOptions:
    """The dataset settings that decide how a row is read (a slice of DatasetConfig)."""

    format: str = "auto"  # auto | messages | sharegpt | alpaca
    field_messages: str = "messages"
    message_property_mappings: dict[str, str] = field(
        default_factory=lambda: {"role": "role", "content": "content"})
    roles: dict[str, list[str]] = field(default_factory=dict)
    field_thinking: str = "thinking"
    field_tools: str = "tools"
    field_reasoning_effort: str | None = None

    @classmethod
    def from_dataset_config(cls, ds: Any) -> FormatOptions:
        return cls(
            format=ds.format,
            field_messages=ds.field_messages,
            message_property_mappings=dict(ds.message_property_mappings),
            roles={k: list(v) for k, v in ds.roles.items()},
            field_thinking=ds.field_thinking,
            field_tools=ds.field_tools,
            field_reasoning_effort=ds.field_reasoning_effort,
        )

    def key(self) -> str:
        return json.dumps(
            [self.format, self.field_messages, sorted(self.message_property_mappings.items()),
             sorted((k, list(v)) for k, v in self.roles.items()), self.field_thinking,
             self.field_tools, self.field_reasoning_effort],
        )

    def role_map(self) -> dict[str, str]:
        mapping = dict(ROLE_ALIASES)
        for role, names in self.roles.items():
            for name in names:
                mapping[name] = role
        return mapping


def detect_format(columns: list[str], opts: FormatOptions) -> str:
    """`messages`, `sharegpt` or `alpaca` from the column names (format: auto), else the
    configured one."""
    if opts.format != "auto":
        return opts.format
    if opts.field_messages in columns:
        return "messages"
    if "conversations" in columns:
        return "sharegpt"
    if all(c in columns for c in ALPACA_COLUMNS):
        return "alpaca"
    shown = ", ".join(c if c.isprintable() else repr(c) for c in columns[:20])
    more = f" and {len(columns) - 20} more" if len(columns) > 20 else ""
    raise RowError(NO_MESSAGES, f"no {opts.field_messages!r} or 'conversations' column and no "
                                f"Alpaca 'instruction' + 'output' (columns: "
                                f"{shown or 'none'}{more})")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(value: Any, where: str, what: str) -> str | None:
    """A content value as text: a string, null, or OpenAI's list of `{"type": "text"}` parts."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        return "".join(p["text"] for p in value)
    raise RowError(WRONG_CONTENT_TYPE, f"{where}: {what} must be a string, got {_type_name(value)}")


def _drop_nulls(value: Any) -> Any:
    """Arrow gives every struct the union of all rows' keys, filled with null: drop those."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _arguments(raw: Any, where: str) -> str:
    if raw is None:
        return "{}"
    if isinstance(raw, str):
        try:
            json.loads(raw)
        except ValueError as e:
            raise RowError(ARGUMENTS_NOT_JSON, f"{where}: arguments are not JSON: {e}") from None
        return raw
    if isinstance(raw, dict | list):
        return json.dumps(_drop_nulls(raw), ensure_ascii=False)
    raise RowError(ARGUMENTS_NOT_JSON, f"{where}: arguments must be an object or a JSON string, "
                                       f"got {_type_name(raw)}")


def _function(entry: dict[str, Any], reason: str, nameless: str) -> tuple[dict[str, Any], str]:
    """An OpenAI `{"function": {...}}` wrapper or a bare function object, and its name."""
    fn = entry.get("function") if isinstance(entry.get("function"), dict) else entry
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise RowError(reason, nameless)
    return fn, name


def _tool_calls(raw: Any, where: str) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RowError(WRONG_CONTENT_TYPE,
                       f"{where}: tool_calls must be a list, got {_type_name(raw)}")
    calls = []
    for j, call in enumerate(raw):
        here = f"{where}: tool call {j}"
        if not isinstance(call, dict):
            raise RowError(WRONG_CONTENT_TYPE, f"{here} must be an object, got {_type_name(call)}")
        fn, name = _function(call, WRONG_CONTENT_TYPE, f"{here} has no function name")
        calls.append(ToolCall(name, _arguments(fn.get("arguments"), f"{here} ({name})"),
                              call.get("id") if isinstance(call.get("id"), str) else None))
    return calls


def parse_tools(raw: Any) -> list[ToolSpec]:
    """OpenAI function tools, as a list or a JSON string of one (Nanobit/text-tools-2k-test)."""
    if raw is None or raw == "":
        return []
    # Structured values may have passed through Arrow (Parquet, hub datasets), which pads every
    # struct with null keys; JSON text never did, so its nulls are real and kept.
    from_text = isinstance(raw, str)
    if from_text:
        try:
            raw = json.loads(raw)
        except ValueError as e:
            raise RowError(BAD_TOOLS, f"tools are not valid JSON: {e}") from None
    if not isinstance(raw, list):
        raise RowError(BAD_TOOLS, f"tools must be a list, got {_type_name(raw)}")
    tools = []
    for j, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise RowError(BAD_TOOLS, f"tool {j} must be an object, got {_type_name(tool)}")
        fn, name = _function(tool, BAD_TOOLS, f"tool {j} has no name")
        description = fn.get("description") or ""
        if not isinstance(description, str):
            raise RowError(BAD_TOOLS, f"tool {j} ({name}) description must be a string")
        params = fn.get("parameters")
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except ValueError as e:
                raise RowError(BAD_TOOLS,
                               f"tool {j} ({name}) parameters are not JSON: {e}") from None
        elif not from_text:
            params = _drop_nulls(params)
        tools.append(ToolSpec(name, description, params))
    return tools


def _train_flag(msg: dict[str, Any], where: str) -> bool | None:
    """`train` / `training` (true or false), or Axolotl's ShareGPT-style `weight` (0 or 1)."""
    for key in TRAIN_KEYS:
        value = msg.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise RowError(WRONG_CONTENT_TYPE, f"{where}: {key} must be true or false, "
                                                   f"got {_type_name(value)}")
            return value
    weight = msg.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or weight not in (0, 1):
            raise RowError(WRONG_CONTENT_TYPE, f"{where}: weight must be 0 or 1, got {weight!r}")
        return bool(weight)
    return None


def _function_call(raw: Any, i: int) -> ChatMessage:
    """LLaMA-Factory's `function_call` turn: {"name", "arguments"} (or a list), as JSON text."""
    where = f"message {i} (function_call)"
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as e:
            raise RowError(ARGUMENTS_NOT_JSON, f"{where}: not JSON: {e}") from None
    calls = raw if isinstance(raw, list) else [raw]
    return ChatMessage(role="assistant", tool_calls=_tool_calls(calls, where), index=i)


def _message(msg: Any, i: int, opts: FormatOptions, roles: dict[str, str],
             sharegpt: bool) -> ChatMessage:
    where = f"message {i}"
    if not isinstance(msg, dict):
        raise RowError(WRONG_CONTENT_TYPE, f"{where}: must be an object, got {_type_name(msg)}")
    props = ({"role": "from", "content": "value"} if sharegpt
             else dict(opts.message_property_mappings))
    role_key, content_key = props.get("role", "role"), props.get("content", "content")
    if role_key not in msg and "from" in msg:  # a ShareGPT message under a messages column
        role_key, content_key = "from", "value"
    raw_role = msg.get(role_key)
    if raw_role in FUNCTION_CALL_ROLES and raw_role not in roles:
        return _function_call(msg.get(content_key), i)
    role = roles.get(raw_role) if isinstance(raw_role, str) else None
    if role not in ROLES:
        raise RowError(UNKNOWN_ROLE, f"{where}: unknown role {raw_role!r} "
                                     "(expected system, developer, user, assistant or tool)")
    content = _text(msg.get(content_key), f"{where} ({role})", "content")
    thinking_keys = [props.get("thinking", opts.field_thinking), *THINKING_FALLBACKS]
    thinking = next((msg[k] for k in thinking_keys if msg.get(k) is not None), None)
    thinking = _text(thinking, f"{where} ({role})", "thinking")
    calls = _tool_calls(msg.get(props.get("tool_calls", "tool_calls")), where)
    name = msg.get(props.get("name", "name"))
    return ChatMessage(
        role=role, content=content, thinking=thinking if role == "assistant" else None,
        tool_calls=calls if role == "assistant" else [],
        name=name if isinstance(name, str) and name else None,
        train=_train_flag(msg, where), index=i,
    )


def _link_tool_results(messages: list[ChatMessage], raw: list[Any]) -> None:
    """Give every tool result its function name, from `name`, `tool_call_id` or call order."""
    pending: list[ToolCall] = []
    for m, src in zip(messages, raw, strict=False):
        if m.role == "assistant" and m.tool_calls:
            pending = list(m.tool_calls)
            continue
        if m.role != "tool":
            continue
        where = f"message {m.index}"
        call_id = src.get("tool_call_id") if isinstance(src, dict) else None
        match = None
        if isinstance(call_id, str) and call_id:
            match = next((c for c in pending if c.id == call_id), None)
            if match is None and m.name is None:
                raise RowError(TOOL_WITHOUT_CALL, f"{where}: tool result for tool_call_id "
                                                  f"{call_id!r} but no earlier call has that id")
        if match is None and m.name is not None:
            match = next((c for c in pending if c.name == m.name), None)
            if match is None and not pending:
                raise RowError(TOOL_WITHOUT_CALL,
                               f"{where}: tool result ({m.name}) without a preceding tool call")
        if match is None:
            if not pending:
                raise RowError(TOOL_WITHOUT_CALL,
                               f"{where}: tool result without a preceding tool call")
            match = pending[0]
        if match in pending:
            pending.remove(match)
        m.name = m.name or match.name


def _alpaca_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Alpaca `instruction` (+ `input`) -> user, `output` -> assistant; optional `system` and
    LLaMA-Factory's `history` ([[instruction, response], ...]) before them."""
    def text(key: str) -> str:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise RowError(WRONG_CONTENT_TYPE, f"{key} must be a string, got {_type_name(value)}")
        return value or ""

    instruction, extra, answer = text("instruction"), text("input"), text("output")
    if not instruction and not extra:
        raise RowError(NO_MESSAGES, "instruction and input are both empty")
    if row.get("output") is None:
        raise RowError(NO_ASSISTANT, "no output")
    history = row.get("history") or []
    if not isinstance(history, list) or not all(
            isinstance(h, list | tuple) and len(h) == 2 and all(isinstance(t, str) for t in h)
            for h in history):
        raise RowError(WRONG_CONTENT_TYPE, "history must be a list of [instruction, response] "
                                           "pairs of strings")
    messages = [{"role": "system", "content": text("system")}] if text("system") else []
    for question, reply in history:
        messages += [{"role": "user", "content": question},
                     {"role": "assistant", "content": reply}]
    prompt = "\n\n".join(t for t in (instruction, extra) if t)
    return messages + [{"role": "user", "content": prompt},
                       {"role": "assistant", "content": answer}]


def _with_system(raw: list[Any], row: dict[str, Any]) -> list[Any]:
    """ShareGPT's top-level `system` column as the first message (before any in the list)."""
    system = row.get("system")
    if system is None or system == "":
        return raw
    if not isinstance(system, str):
        raise RowError(WRONG_CONTENT_TYPE, f"system must be a string, got {_type_name(system)}")
    return [{"from": "system", "value": system}, *raw]


def row_to_chat(row: dict[str, Any], fmt: str, opts: FormatOptions) -> Chat:
    """One dataset row as a `Chat`; raises RowError with the reason."""
    if fmt == "alpaca":
        return row_to_chat({**row, "messages": _alpaca_messages(row)}, "messages",
                           FormatOptions(field_tools=opts.field_tools,
                                         field_reasoning_effort=opts.field_reasoning_effort))
    sharegpt = fmt == "sharegpt"
    column = "conversations" if sharegpt and opts.field_messages not in row else opts.field_messages
    raw = row.get(column)
    if isinstance(raw, str):  # some exports keep the conversation as a JSON string
        try:
            raw = json.loads(raw)
        except ValueError:
            raise RowError(WRONG_CONTENT_TYPE, f"{column} is a string that is not JSON") from None
    if raw is None or (isinstance(raw, list) and not raw):
        raise RowError(NO_MESSAGES, f"no messages in {column!r}")
    if not isinstance(raw, list):
        raise RowError(WRONG_CONTENT_TYPE,
                       f"{column} must be a list of messages, got {_type_name(raw)}")
    first = 0
    if sharegpt:
        with_system = _with_system(raw, row)
        first = len(raw) - len(with_system)  # -1: the system column has no place in the list
        raw = with_system
    roles = opts.role_map()
    messages = [_message(m, i, opts, roles, sharegpt) for i, m in enumerate(raw, first)]
    _link_tool_results(messages, raw)
    if not any(m.role == "assistant" for m in messages):
        raise RowError(NO_ASSISTANT, "no assistant message")
    effort_field = opts.field_reasoning_effort or "reasoning_effort"
    effort = row.get(effort_field)
    if effort is not None and effort not in REASONING_EFFORTS:
        raise RowError(BAD_EFFORT, f"{effort_field} {effort!r} is not low, medium or high")
    return Chat(messages, parse_tools(row.get(opts.field_tools)), effort)
