"""One training example, token by token: trained text bright, masked text dim, specials distinct.

The text comes from the renderer `osstune inspect` uses (tui/render/tokens.py), so the wizard
and the CLI cannot disagree about what is trained or how it looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from osstune.tui.render import tokens as token_render

if TYPE_CHECKING:
    from osstune.engine.data.token_view import TokenView


def legend() -> Text:
    return Text.assemble(
        ("trained", token_render.STYLE_TRAINED),
        "  ",
        ("masked", token_render.STYLE_MASKED),
        "  ",
        ("<|special|>", token_render.STYLE_SPECIAL_MASKED),
        "  ",
        ("<|trained special|>", token_render.STYLE_SPECIAL_TRAINED),
    )


class TokenPreview(Static):
    def show(self, tokens: Sequence[TokenView], show_ids: bool = False) -> None:
        self.update(token_render.render_wrapped(list(tokens), show_ids))
