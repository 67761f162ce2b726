"""How a preset's verdict looks: one colour per verdict for the CLI tables and the wizard alike."""

from __future__ import annotations

VERDICT_COLOUR = {"fits": "green", "tight": "yellow", "does-not-fit": "red"}


def verdict_style(verdict: str | None, bold: bool = False) -> str:
    """The Rich style of a verdict ('' for none or an unknown one); the CLI prints it bold."""
    colour = VERDICT_COLOUR.get(verdict or "", "")
    return f"bold {colour}" if bold and colour else colour
