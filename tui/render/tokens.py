"""Tokens as the user sees them: trained text bright, masked text dim, harmony specials distinct.

`osstune inspect` and the wizard's token preview both render through here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

    from osstune.engine.data.token_view import TokenView
    from osstune.tui.render.wrap import SoftWrap

# Styles: trained tokens stand out, prompt tokens recede, harmony specials have their own colour.
STYLE_TRAINED = "bold black on green"
STYLE_MASKED = "dim"
STYLE_SPECIAL_TRAINED = "bold black on cyan"
STYLE_SPECIAL_MASKED = "cyan"
# Without colour (a pipe, NO_COLOR) trained runs are bracketed instead.
PLAIN_OPEN, PLAIN_CLOSE = "⟦", "⟧"


def token_text(view: TokenView, show_ids: bool) -> str:
    from osstune.tui.output import safe_text

    text = safe_text(view.text)  # data never drives the terminal (ESC, NUL, C1, bidi overrides)
    return f"{text}⟨{view.id}⟩" if show_ids else text


def render_colour(views: list[TokenView], show_ids: bool) -> Text:
    from rich.text import Text  # lazily: the CLI starts without Rich

    text = Text()
    for v in views:
        if v.special:
            style = STYLE_SPECIAL_TRAINED if v.trained else STYLE_SPECIAL_MASKED
        else:
            style = STYLE_TRAINED if v.trained else STYLE_MASKED
        text.append(token_text(v, show_ids), style=style)
    return text


def render_wrapped(views: list[TokenView], show_ids: bool) -> SoftWrap:
    """`render_colour`, wrapped to where it is drawn at word or token boundaries, never inside a
    token that fits on a line (Rich alone would cut `<|mes|sage|>` at the edge)."""
    from osstune.tui.render.wrap import SoftWrap

    starts, offset = [], 0
    for v in views:
        starts.append(offset)
        offset += len(token_text(v, show_ids))
    return SoftWrap(render_colour(views, show_ids), starts)


def render_plain(views: list[TokenView], show_ids: bool) -> str:
    parts: list[str] = []
    inside = False
    for v in views:
        if v.trained != inside:
            parts.append(PLAIN_OPEN if v.trained else PLAIN_CLOSE)
            inside = v.trained
        parts.append(token_text(v, show_ids))
    if inside:
        parts.append(PLAIN_CLOSE)
    return "".join(parts)
