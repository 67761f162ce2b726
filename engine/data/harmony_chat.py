"""Talking to a trained model in harmony: the prompt and the parse of what it generates.

`render_prompt` renders a conversation that ends with the user's turn through the same planner
and tokenizer path as training (`harmony.plan` + `HarmonyRenderer`), then opens the assistant's
turn with `<|start|>assistant` - openai-harmony's `render_conversation_for_completion`.
`HarmonyStream` turns generated ids back into messages, one channel at a time (analysis,
commentary, final), yielding text deltas as they come. No torch import here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from osstune.engine.data.chat import Chat
from osstune.engine.data.harmony import HarmonyRenderer
from osstune.engine.data.harmony_plan import (
    CALL,
    CHANNEL,
    END,
    MESSAGE,
    RETURN,
    START,
    RenderSettings,
    plan,
)

ENDOFTEXT = "<|endoftext|>"


def render_prompt(tokenizer: Any, chat: Chat, settings: RenderSettings) -> list[int]:
    """Ids of `chat` (ending with a user message) followed by `<|start|>assistant`."""
    renderer = HarmonyRenderer(tokenizer, settings)
    messages = plan(chat, settings, trained=lambda _p, _m: False)
    example = renderer._assemble(0, None, messages, {})
    return example.input_ids + [renderer.special_ids[START], *renderer._cached_text("assistant")]


@dataclass
class Delta:
    """A piece of one generated message: `start` opens it, `end` closes it, else text."""

    channel: str
    text: str = ""
    recipient: str | None = None
    start: bool = False
    end: bool = False


@dataclass
class GeneratedMessage:
    channel: str
    text: str
    recipient: str | None = None


def parse_header(text: str) -> tuple[str, str | None]:
    """'<|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json' ->
    ('commentary', 'functions.f'). A header without a channel is 'final' (harmony's default)."""
    channel = re.search(r"<\|channel\|>\s*([\w.]+)", text)
    to = re.search(r"to=([\w.]+)", text)
    return (channel.group(1) if channel else "final"), (to.group(1) if to else None)


@dataclass
class HarmonyStream:
    """Feed generated ids one by one; `done` after `<|return|>`, `<|call|>` or end of text."""

    tokenizer: Any
    done: bool = False
    messages: list[GeneratedMessage] = field(default_factory=list)
    _header: list[int] = field(default_factory=list)
    _content: list[int] = field(default_factory=list)
    _shown: str = ""
    _current: GeneratedMessage | None = None

    def __post_init__(self) -> None:
        ids = {t: self.tokenizer.convert_tokens_to_ids(t)
               for t in (MESSAGE, END, RETURN, CALL, ENDOFTEXT, START, CHANNEL)}
        self._message, self._ends = ids[MESSAGE], {ids[END], ids[RETURN], ids[CALL]}
        self._final_ends = {ids[RETURN], ids[CALL], ids[ENDOFTEXT]}
        self.stop_ids = sorted(self._final_ends)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def feed(self, token: int) -> list[Delta]:
        if self.done:
            return []
        if self._current is None:
            if token in self._final_ends:
                self.done = True
                return self._unparsed()
            if token != self._message:
                self._header.append(token)
                return []
            channel, recipient = parse_header(self._decode(self._header))
            self._current = GeneratedMessage(channel, "", recipient)
            self._header, self._content, self._shown = [], [], ""
            return [Delta(channel, recipient=recipient, start=True)]
        current = self._current
        if token in self._ends or token in self._final_ends:
            out = self._flush(final=True)
            out.append(Delta(current.channel, recipient=current.recipient, end=True))
            current.text = self._shown
            self.messages.append(current)
            self._current = None
            self.done = token in self._final_ends
            return out
        self._content.append(token)
        return self._flush(final=False)

    def _flush(self, final: bool) -> list[Delta]:
        text = self._decode(self._content)
        if not final:
            text = text.rstrip("\ufffd")  # hold back a partly generated UTF-8 character
        new = text[len(self._shown):]
        if not new:
            return []
        self._shown = text
        assert self._current is not None
        return [Delta(self._current.channel, new, self._current.recipient)]

    def finish(self) -> list[Delta]:
        """Close whatever is open when generation stops at the token limit."""
        if self._current is not None:
            current = self._current
            out = self._flush(final=True)
            current.text = self._shown
            self.messages.append(current)
            self._current = None
            return [*out, Delta(current.channel, recipient=current.recipient, end=True)]
        return self._unparsed()

    def _unparsed(self) -> list[Delta]:
        """Tokens that never became a message (an untrained model): shown, not dropped."""
        if not self._header:
            return []
        text = self._decode(self._header)
        self._header = []
        self.messages.append(GeneratedMessage("unparsed", text))
        return [Delta("unparsed", start=True), Delta("unparsed", text),
                Delta("unparsed", end=True)]

    @property
    def final_text(self) -> str:
        return "".join(m.text for m in self.messages if m.channel == "final")
