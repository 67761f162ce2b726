"""Per-token preview of an example: text, trained or not, special or not, source message and role.

One view for `osstune inspect` and the wizard's dataset screen, so both show the same thing.
"""

from __future__ import annotations

import codecs
import functools
from dataclasses import dataclass
from typing import Any

from osstune.engine.data.harmony import IGNORE_INDEX, Example


@dataclass(frozen=True)
class TokenView:
    id: int
    text: str
    trained: bool
    special: bool
    message_index: int
    role: str


@functools.cache
def _byte_decoder() -> dict[str, int]:
    from osstune.engine.data.tokenizer import _bytes_to_unicode

    return {ch: b for b, ch in _bytes_to_unicode().items()}


def token_view(tokenizer: Any, example: Example) -> list[TokenView]:
    """Token texts decode incrementally, so a character split over tokens shows once, whole."""
    byte_decoder = _byte_decoder()
    # `added_tokens_decoder` builds a fresh dict on every access: read it once.
    special_ids = set(tokenizer.all_special_ids) | {
        i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    pieces = tokenizer.convert_ids_to_tokens(example.input_ids)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = []
    for i, (tid, piece) in enumerate(zip(example.input_ids, pieces, strict=False)):
        special = tid in special_ids
        if special:
            text = decoder.decode(b"", final=True) + (piece or "")
            decoder.reset()
        else:
            raw = bytes(byte_decoder.get(ch, 63) for ch in (piece or ""))
            text = decoder.decode(raw)
        out.append(TokenView(tid, text, example.labels[i] != IGNORE_INDEX, special,
                             example.message_index[i], example.role[i]))
    return out
