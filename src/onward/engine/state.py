"""What a run has done so far, kept so that whoever ends the run can leave a valid history.

The loop updates this value synchronously at the moment a step is queued for commit, so that a
cancellation arriving at any await finds an exact account of what is written and what is open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onward.core.messages import ToolCall
from onward.core.runs import Run


@dataclass(slots=True)
class StreamingMessage:
    message_id: str
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RunState:
    run: Run
    next_position: int
    streaming: StreamingMessage | None = None  # the assistant message being streamed, uncommitted
    open_calls: dict[str, ToolCall] = field(default_factory=dict)  # committed calls without a result
    usage: dict[str, int] = field(default_factory=dict)

    def take_position(self) -> int:
        pos = self.next_position
        self.next_position += 1
        return pos

    def add_usage(self, usage: dict[str, object]) -> None:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int):
                self.usage[key] = self.usage.get(key, 0) + value
