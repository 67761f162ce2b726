"""Harmony rendering with loss masks: planned harmony messages become token ids and labels.

`harmony_plan` turns a `Chat` into harmony messages (system, developer, then the conversation),
each tagged with its source message and whether it is trained; here they are tokenized (all free
text of a batch in one call to the Rust tokenizer, fixed header strings from a cache) into
`Example`s: input ids, labels (-100 = not trained), and per token the source message index and
role. The ids equal openai-harmony's `render_conversation_for_training` with
`auto_drop_analysis=False` on the same messages after our drop rule (see the harmony tests).

Mask rule: in a trained assistant message every generated token is trained (channel header,
recipient, content type, content, end token). Its `<|start|>assistant` is generated only right
after an assistant message that ended with `<|end|>`; after anything else (user, tool, system,
developer, or a `<|call|>`, where generation stops) it is prompt and masked.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from osstune.engine.data.chat import Chat, RowError
from osstune.engine.data.harmony_plan import (
    CALL,
    CHANNEL,
    CONSTRAIN,
    END,
    MESSAGE,
    RETURN,
    START,
    HarmonyMessage,
    Plan,
    RenderSettings,
    plan,
    plan_examples,
)

IGNORE_INDEX = -100


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
