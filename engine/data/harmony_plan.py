"""Harmony planning: which harmony messages a chat becomes, and which of them are trained.

A `Chat` becomes a list of harmony messages (system, developer, then the conversation), each
tagged with the source message it came from and whether it is trained. Analysis of assistant
messages before the last user message is dropped, as at inference (openai-harmony's rule);
`train_turns` picks the trained turns (`all`, `last`, or one example per turn for `expand`).
`harmony.HarmonyRenderer` turns the plans into token ids and labels. No tokenizer here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from osstune.engine.data.chat import Chat, ChatMessage, RowError
from osstune.engine.data.dataset_formats import NO_ASSISTANT
from osstune.engine.data.harmony_system import (
    DEFAULT_IDENTITY,
    DEFAULT_KNOWLEDGE_CUTOFF,
    REASONING_EFFORTS,
    developer_text,
    system_text,
)

SYSTEM_MESSAGE_INDEX = -1  # the generated system message has no source message
TRAIN_TURNS = ("all", "last", "expand")

START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL = (
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>",
)
CONSTRAINED_JSON = "<|constrain|>json"


@dataclass(frozen=True)
class RenderSettings:
    reasoning_effort: str = "medium"
    model_identity: str | None = DEFAULT_IDENTITY
    knowledge_cutoff: str | None = DEFAULT_KNOWLEDGE_CUTOFF
    conversation_start_date: str | None = None
    roles_to_train: tuple[str, ...] = ("assistant",)
    train_turns: str = "all"

    def __post_init__(self) -> None:
        if self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError("reasoning_effort must be low, medium or high, "
                             f"got {self.reasoning_effort!r}")
        if self.train_turns not in TRAIN_TURNS:
            raise ValueError(f"train_turns must be all, last or expand, got {self.train_turns!r}")

    @classmethod
    def from_dataset_config(cls, ds: Any) -> RenderSettings:
        return cls(
            reasoning_effort=ds.reasoning_effort,
            model_identity=ds.model_identity,
            conversation_start_date=ds.conversation_start_date,
            roles_to_train=tuple(ds.roles_to_train),
            train_turns=ds.train_turns,
        )


@dataclass
class HarmonyMessage:
    """`<|start|>{author}[ to=R][<|channel|>C][ TYPE]<|message|>{text}{end}`."""

    role: str  # harmony role: system, developer, user, assistant, tool
    author: str  # header text: the role, or functions.NAME for a tool result
    text: str
    message_index: int
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None
    end: str = END
    trained: bool = False


def _turn_ids(messages: Sequence[ChatMessage]) -> list[int]:
    """Turn number of each message: a user message opens a new turn."""
    turn, out = 0, []
    for m in messages:
        if m.role == "user":
            turn += 1
        out.append(turn)
    return out


def _default_trained(m: ChatMessage, settings: RenderSettings) -> bool:
    """The message's own `train` flag if it has one, else whether its role is trained."""
    return m.train if m.train is not None else m.role in settings.roles_to_train


def _assistant_messages(m: ChatMessage, keep_analysis: bool, trained: bool) -> list[HarmonyMessage]:
    out: list[HarmonyMessage] = []
    if keep_analysis and m.thinking:
        out.append(HarmonyMessage("assistant", "assistant", m.thinking, m.index,
                                  channel="analysis", trained=trained))
    if m.tool_calls:
        # Text beside tool calls is a preamble the user sees: the commentary channel.
        if m.content:
            out.append(HarmonyMessage("assistant", "assistant", m.content, m.index,
                                      channel="commentary", trained=trained))
        for call in m.tool_calls:
            out.append(HarmonyMessage(
                "assistant", "assistant", call.arguments, m.index, channel="commentary",
                recipient=f"functions.{call.name}", content_type=CONSTRAINED_JSON, end=CALL,
                trained=trained,
            ))
    else:
        # Every answer without tool calls has its final message, even an empty one (reasoning
        # and no answer): openai-harmony renders the turn [analysis, final ""] so, and the
        # model's own chat template always writes the final. The summary counts such rows.
        out.append(HarmonyMessage("assistant", "assistant", m.content or "", m.index,
                                  channel="final", trained=trained))
    return out


def _instruction_messages(chat: Chat, settings: RenderSettings, lead: int, system_trained: bool,
                          developer_trained: bool) -> list[HarmonyMessage]:
    """The generated system message, then the developer message made of the chat's `lead`
    leading system/developer messages and its tools (left out when it has neither)."""
    messages = chat.messages
    instructions = "\n\n".join(m.content for m in messages[:lead] if m.content) or None
    out = [HarmonyMessage(
        "system", "system",
        system_text(
            model_identity=settings.model_identity,
            knowledge_cutoff=settings.knowledge_cutoff,
            conversation_start_date=settings.conversation_start_date,
            reasoning_effort=chat.reasoning_effort or settings.reasoning_effort,
            has_function_tools=bool(chat.tools),
        ),
        SYSTEM_MESSAGE_INDEX,
        trained=system_trained,
    )]
    if instructions is not None or chat.tools:
        dev_index = messages[0].index if instructions is not None else SYSTEM_MESSAGE_INDEX
        out.append(HarmonyMessage(
            "developer", "developer", developer_text(instructions, chat.tools), dev_index,
            trained=developer_trained,
        ))
    return out


def plan(
    chat: Chat,
    settings: RenderSettings,
    trained: Callable[[int, ChatMessage], bool] | None = None,
) -> list[HarmonyMessage]:
    """The harmony messages for `chat`, with the drop rule applied and trained flags set.

    `trained(position, message)` decides which source messages are trained (default: by role,
    then the per-message `train` override). Analysis of assistant messages before the last user
    message is dropped, as at inference.
    """
    messages = chat.messages
    pick = trained or (lambda _p, m: _default_trained(m, settings))
    lead = 0
    while lead < len(messages) and messages[lead].role in ("system", "developer"):
        lead += 1
    # The generated system message has no source message; only roles_to_train can select it.
    system_trained = trained is None and "system" in settings.roles_to_train
    out = _instruction_messages(chat, settings, lead, system_trained,
                                any(pick(p, m) for p, m in enumerate(messages[:lead])))
    last_user = max((p for p, m in enumerate(messages) if m.role == "user"), default=-1)
    for p in range(lead, len(messages)):
        m = messages[p]
        is_trained = pick(p, m)
        if m.role == "assistant":
            out.extend(_assistant_messages(m, keep_analysis=p > last_user, trained=is_trained))
        elif m.role == "tool":
            out.append(HarmonyMessage("tool", f"functions.{m.name}", m.content or "", m.index,
                                      channel="commentary", recipient="assistant",
                                      trained=is_trained))
        elif m.role == "user":
            out.append(HarmonyMessage("user", "user", m.content or "", m.index, trained=is_trained))
        else:  # a system or developer message mid-conversation: more instructions
            out.append(HarmonyMessage("developer", "developer",
                                      developer_text(m.content or "", []), m.index,
                                      trained=is_trained))

    last = out[-1]
    if last.role == "assistant" and last.channel == "final":
        last.end = RETURN
    return out


def _trim_to_last_assistant(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Drop trailing non-assistant messages: nothing after the last assistant reply is trained."""
    end = len(messages)
    while end and messages[end - 1].role != "assistant":
        end -= 1
    return messages[:end]


Plan = tuple[int | None, list[HarmonyMessage]]


def plan_examples(chat: Chat, settings: RenderSettings) -> list[Plan]:
    """One plan per example: one for `all`/`last`, one per trained turn for `expand`."""
    if not any(m.role == "assistant" for m in chat.messages):
        raise RowError(NO_ASSISTANT, "no assistant message")
    messages = _trim_to_last_assistant(chat.messages)
    turns = _turn_ids(messages)

    def default(m: ChatMessage) -> bool:
        return _default_trained(m, settings)

    if settings.train_turns == "all":
        return [(None, plan(Chat(messages, chat.tools, chat.reasoning_effort), settings))]
    if settings.train_turns == "last":
        last_turn = turns[-1]
        return [(None, plan(
            Chat(messages, chat.tools, chat.reasoning_effort), settings,
            lambda p, m: turns[p] == last_turn and default(m),
        ))]
    plans = []
    for turn in sorted(set(turns)):
        in_turn = [p for p, t in enumerate(turns) if t == turn]
        if not any(default(messages[p]) and messages[p].role != "user" for p in in_turn):
            continue
        body = _trim_to_last_assistant(messages[: in_turn[-1] + 1])
        if not body or turns[len(body) - 1] != turn:
            continue
        plans.append((turn, plan(
            Chat(body, chat.tools, chat.reasoning_effort), settings,
            lambda p, m, turn=turn: turns[p] == turn and default(m),
        )))
    return plans
