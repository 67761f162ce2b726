"""A conversation in one canonical shape, whatever layout the dataset row had.

Dataset formats (engine/dataset_formats.py) turn rows into `Chat`; the harmony renderer
(engine/harmony.py) turns a `Chat` into token ids and labels. `index` keeps the message's position
in the source row, so every rendered token can point back at the message it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from osstune.engine.data.harmony_system import ToolSpec

ROLES = ("system", "developer", "user", "assistant", "tool")


class RowError(ValueError):
    """A dataset row that cannot be used. `reason` is the short key the skip counts use."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, exactly as it will be rendered
    id: str | None = None


@dataclass
class ChatMessage:
    role: str  # one of ROLES
    content: str | None = None
    thinking: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    name: str | None = None  # tool results: the function that produced them
    train: bool | None = None  # per-message override of the default mask
    index: int = 0


@dataclass
class Chat:
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    reasoning_effort: str | None = None  # per-row override
