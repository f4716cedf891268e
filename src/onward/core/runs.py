"""A run is an immutable value built from a stored row; changing it means making a new value."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


ACTIVE_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING})
TERMINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.INTERRUPTED}
)


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    conversation_id: str
    user_id: str
    status: RunStatus
    input: str
    model: str | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_seq: int = 0
    error: str | None = None
    usage: dict[str, Any] | None = None

    def evolve(self, **changes: Any) -> Run:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "status": self.status.value,
            "input": self.input,
            "model": self.model,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "last_seq": self.last_seq,
            "error": self.error,
            "usage": self.usage,
        }
