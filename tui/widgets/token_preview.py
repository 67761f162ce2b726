"""One training example, token by token: trained text bright, masked text dim, specials distinct.

The text comes from `osstune inspect`'s renderer over `engine.data.token_view.TokenView`s, so the
wizard and the CLI cannot disagree about what is trained or how it looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from osstune.tui.commands import inspect as inspect_command

if TYPE_CHECKING:
    from osstune.engine.data.token_view import TokenView


def token_text(tokens: Sequence[TokenView], show_ids: bool = False) -> Text:
    return inspect_command.render_colour(list(tokens), show_ids)


def legend() -> Text:
    return Text.assemble(
        ("trained", inspect_command.STYLE_TRAINED),
        "  ",
        ("masked", inspect_command.STYLE_MASKED),
        "  ",
        ("<|special|>", inspect_command.STYLE_SPECIAL_MASKED),
        "  ",
        ("<|trained special|>", inspect_command.STYLE_SPECIAL_TRAINED),
    )


class TokenPreview(Static):
    def show(self, tokens: Sequence[TokenView], show_ids: bool = False) -> None:
        self.update(token_text(tokens, show_ids))
