"""One training example, token by token: trained text bright, masked text dim, specials distinct.

Fed with `engine.token_view.TokenView`s, the per-token view `osstune inspect` prints, so the wizard
and the CLI cannot disagree about what is trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

if TYPE_CHECKING:
    from engine.token_view import TokenView

STYLES = {
    # (trained, special) -> style
    (True, False): "bold green",
    (False, False): "dim",
    (True, True): "bold black on green",
    (False, True): "bold magenta",
}


def token_text(tokens: Sequence[TokenView], show_ids: bool = False) -> Text:
    out = Text()
    for token in tokens:
        style = STYLES[(token.trained, token.special)]
        out.append(token.text, style=style)
        if show_ids:
            out.append(f"[{token.id}]", style="dim cyan" if token.trained else "dim blue")
    return out


def legend() -> Text:
    return Text.assemble(
        ("trained", STYLES[(True, False)]),
        "  ",
        ("masked", STYLES[(False, False)]),
        "  ",
        ("<|special|>", STYLES[(False, True)]),
        "  ",
        ("<|trained special|>", STYLES[(True, True)]),
    )


class TokenPreview(Static):
    def show(self, tokens: Sequence[TokenView], show_ids: bool = False) -> None:
        self.update(token_text(tokens, show_ids))
