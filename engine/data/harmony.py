"""Harmony rendering with loss masks, built message by message.

A `Chat` becomes a list of harmony messages (system, developer, then the conversation), each
tagged with the source message it came from and whether it is trained; the messages are then
tokenized (all free text of a batch in one call to the Rust tokenizer, fixed header strings from a
cache) into `Example`s: input ids, labels (-100 = not trained), and per token the source message
index and role. The ids equal openai-harmony's `render_conversation_for_training` with
`auto_drop_analysis=False` on the same messages after our drop rule (see the harmony tests).

Mask rule: in a trained assistant message every generated token is trained (channel header,
recipient, content type, content, end token). Its `<|start|>assistant` is generated only right
after an assistant message that ended with `<|end|>`; after anything else (user, tool, system,
developer, or a `<|call|>`, where generation stops) it is prompt and masked.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
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

IGNORE_INDEX = -100
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


@dataclass
class Example:
    """One training example; every token knows its source message and role."""

    row: int
    input_ids: list[int]
    labels: list[int]
    message_index: list[int]
    role: list[str]
    turn: int | None = None  # the trained turn, for train_turns: expand

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)


# --------------------------------------------------------------------------- planning


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
    effort = chat.reasoning_effort or settings.reasoning_effort
    pick = trained or (lambda _p, m: _default_trained(m, settings))

    lead = 0
    while lead < len(messages) and messages[lead].role in ("system", "developer"):
        lead += 1
    instructions = "\n\n".join(m.content for m in messages[:lead] if m.content) or None

    out: list[HarmonyMessage] = []
    # The generated system message has no source message; only roles_to_train can select it.
    system_trained = trained is None and "system" in settings.roles_to_train
    out.append(HarmonyMessage(
        "system", "system",
        system_text(
            model_identity=settings.model_identity,
            knowledge_cutoff=settings.knowledge_cutoff,
            conversation_start_date=settings.conversation_start_date,
            reasoning_effort=effort,
            has_function_tools=bool(chat.tools),
        ),
        SYSTEM_MESSAGE_INDEX,
        trained=system_trained,
    ))
    if instructions is not None or chat.tools:
        dev_index = messages[0].index if instructions is not None else SYSTEM_MESSAGE_INDEX
        out.append(HarmonyMessage(
            "developer", "developer", developer_text(instructions, chat.tools), dev_index,
            trained=any(pick(p, m) for p, m in enumerate(messages[:lead])),
        ))

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


# --------------------------------------------------------------------------- tokenizing

_PLAIN_ENCODERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def plain_text_encoder(tokenizer: Any) -> Any:
    """A copy of the Rust tokenizer that reads `<|end|>` in text as ordinary characters."""
    encoder = _PLAIN_ENCODERS.get(tokenizer)
    if encoder is None:
        from tokenizers import Tokenizer

        encoder = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        encoder.encode_special_tokens = True
        encoder.no_truncation()
        encoder.no_padding()
        _PLAIN_ENCODERS[tokenizer] = encoder
    return encoder


class HarmonyRenderer:
    """Renders `Chat`s into `Example`s for one tokenizer and one set of render settings."""

    _TEXT_CACHE_LIMIT = 4096

    def __init__(self, tokenizer: Any, settings: RenderSettings | None = None) -> None:
        self.settings = settings or RenderSettings()
        self._encoder = plain_text_encoder(tokenizer)
        ids = {tok: tokenizer.convert_tokens_to_ids(tok)
               for tok in (START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL)}
        self.special_ids = ids
        self._start = ids[START]
        self._end_ids = {END: ids[END], RETURN: ids[RETURN], CALL: ids[CALL]}
        self._header_cache: dict[tuple[Any, ...], tuple[list[int], int]] = {}
        self._text_cache: dict[str, list[int]] = {}

    # Encoding --------------------------------------------------------------------------

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        encode = getattr(self._encoder, "encode_batch_fast", self._encoder.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def _cached_text(self, text: str) -> list[int]:
        ids = self._text_cache.get(text)
        if ids is None:
            ids = self.encode_text([text])[0] if text else []
            self._remember(text, ids)
        return ids

    def _header(self, m: HarmonyMessage) -> tuple[list[int], int]:
        """Ids from `<|start|>` to `<|message|>`, and how many of them are `<|start|>{author}`."""
        key = (m.author, m.recipient, m.channel, m.content_type)
        hit = self._header_cache.get(key)
        if hit is not None:
            return hit
        sp = self.special_ids
        author = self._cached_text(m.author)
        ids = [self._start, *author]
        if m.recipient is not None and m.recipient != "all":
            ids += self._cached_text(f" to={m.recipient}")
        if m.channel is not None:
            ids += [sp[CHANNEL], *self._cached_text(m.channel)]
        if m.content_type is not None:
            if m.content_type.startswith(CONSTRAIN):
                rest = m.content_type[len(CONSTRAIN):]
                ids += [*self._cached_text(" "), sp[CONSTRAIN], *self._cached_text(rest)]
            else:
                ids += self._cached_text(f" {m.content_type}")
        ids.append(sp[MESSAGE])
        hit = (ids, 1 + len(author))
        self._header_cache[key] = hit
        return hit

    # Rendering -------------------------------------------------------------------------

    def render(self, chat: Chat, row: int = 0) -> list[Example]:
        result = self.render_batch([(row, chat)])[0]
        if isinstance(result, RowError):
            raise result
        return result

    def render_batch(self, chats: Iterable[tuple[int, Chat]]) -> list[list[Example] | RowError]:
        """Render many chats with one tokenizer call for all their distinct texts."""
        planned: list[tuple[int, list[Plan]] | RowError] = []
        pending: dict[str, None] = {}  # distinct texts not yet encoded, in first-seen order
        sticky: set[str] = set()  # system/developer texts repeat across rows: keep them
        cache = self._text_cache
        for row, chat in chats:
            try:
                plans = plan_examples(chat, self.settings)
            except RowError as e:
                planned.append(e)
                continue
            planned.append((row, plans))
            for _turn, msgs in plans:
                for m in msgs:
                    if m.text not in cache:
                        pending[m.text] = None
                        if m.role in ("system", "developer"):
                            sticky.add(m.text)
        texts = list(pending)
        encoded = dict(zip(texts, self.encode_text(texts), strict=True))
        for text in sticky:
            self._remember(text, encoded[text])

        out: list[list[Example] | RowError] = []
        for item in planned:
            if isinstance(item, RowError):
                out.append(item)
                continue
            row, plans = item
            out.append([self._assemble(row, turn, msgs, encoded) for turn, msgs in plans])
        return out

    def _remember(self, text: str, ids: list[int]) -> None:
        if len(self._text_cache) >= self._TEXT_CACHE_LIMIT:
            self._text_cache.clear()
        self._text_cache[text] = ids

    def _assemble(self, row: int, turn: int | None, msgs: list[HarmonyMessage],
                  encoded: dict[str, list[int]]) -> Example:
        input_ids: list[int] = []
        labels: list[int] = []
        message_index: list[int] = []
        roles: list[str] = []
        prev_assistant_end = False
        for m in msgs:
            header, start_len = self._header(m)
            body = encoded.get(m.text)
            if body is None:
                body = self._cached_text(m.text)
            end = self._end_ids[m.end]
            n = len(header) + len(body) + 1
            input_ids += header
            input_ids += body
            input_ids.append(end)
            if m.trained:
                masked = 0 if (m.role == "assistant" and prev_assistant_end) else (
                    start_len if m.role == "assistant" else 1)
                labels += [IGNORE_INDEX] * masked
                labels += header[masked:]
                labels += body
                labels.append(end)
            else:
                labels += [IGNORE_INDEX] * n
            message_index += [m.message_index] * n
            roles += [m.role] * n
            prev_assistant_end = m.role == "assistant" and m.end == END
        return Example(row, input_ids, labels, message_index, roles, turn)


def render_chat(tokenizer: Any, chat: Chat, settings: RenderSettings | None = None,
                row: int = 0) -> list[Example]:
    """Convenience: a one-off render (builds a renderer; use HarmonyRenderer for many rows)."""
    return HarmonyRenderer(tokenizer, settings).render(chat, row)


__all__ = [
    "Example",
    "HarmonyMessage",
    "HarmonyRenderer",
    "IGNORE_INDEX",
    "RenderSettings",
    "plan",
    "plan_examples",
    "render_chat",
]
