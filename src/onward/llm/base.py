"""The Provider protocol and the normalized stream chunks every provider yields.

Providers absorb the quirks of servers (repeated ids and names in tool-call deltas, missing ids,
reasoning under different field names) so the engine sees one clean stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningChunk:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    """Part of tool call number `index`: `id` and `name` are always the call's settled values."""

    index: int
    id: str
    name: str
    arguments_delta: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)


StreamChunk = TextChunk | ReasoningChunk | ToolCallChunk | StreamEnd


class Provider(Protocol):
    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, model: str
    ) -> AsyncIterator[StreamChunk]:
        """Stream one completion. Raises onward.errors.LLMError with a clear reason on failure.

        Retries (429, 5xx, connect errors) happen only before the first chunk is yielded.
        Cancelling the consuming task closes the HTTP stream.
        """
        ...
