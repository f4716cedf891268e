"""The Store protocol and the unit of writing: a WriteBatch committed in one transaction.

Run state travels one path: the journal gathers events, messages and run changes from every run
into a WriteBatch, the store commits it, and only then is anything published.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from onward.core.events import Event
from onward.core.messages import Message
from onward.core.runs import Run, RunStatus


@dataclass(frozen=True, slots=True)
class StoredMessage:
    conversation_id: str
    position: int
    message: Message


@dataclass(frozen=True, slots=True)
class RunChange:
    """Column values to set on a run; with `expect`, only if its status is one of them."""

    run_id: str
    values: dict[str, Any]
    expect: frozenset[RunStatus] | None = None


@dataclass(slots=True)
class WriteBatch:
    events: list[Event] = field(default_factory=list)
    messages: list[StoredMessage] = field(default_factory=list)
    changes: list[RunChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.messages or self.changes)


_PENDING: Any = object()


class WriteOutcome:
    """What became of a `Store.write_soon`, delivered to its `done` on the loop exactly once.

    The thread that wrote the batch records the outcome (`arrive`) and then schedules `deliver`
    on the loop; the loop's own code may `deliver` it sooner, as soon as `ready`. Under load the
    scheduled call waited for the rest of the loop's turn, 8 ms at the median and up to 30 with
    500 runs streaming, and every event of the batch waited with it (docs/performance.md).
    """

    __slots__ = ("_done", "_error")

    def __init__(self, done: Callable[[BaseException | None], None]) -> None:
        self._done: Callable[[BaseException | None], None] | None = done
        self._error: BaseException | None = _PENDING

    @property
    def ready(self) -> bool:
        return self._error is not _PENDING

    def arrive(self, error: BaseException | None) -> None:
        """The outcome is known (any thread): None if the batch is committed, else the error."""
        self._error = error

    def deliver(self) -> None:
        """On the loop: call `done` with the outcome if it has arrived and was not delivered yet."""
        if self._error is _PENDING or self._done is None:
            return
        done, self._done = self._done, None
        done(self._error)


class StaleTransition(Exception):
    """A conditional run change found the run in another status; nothing was written."""


class Store(Protocol):
    async def init(self) -> None: ...
    async def close(self) -> None: ...

    async def ensure_user(self, name: str) -> str: ...

    async def create_conversation(self, user_id: str, title: str) -> dict[str, Any]: ...
    async def list_conversations(self, user_id: str, limit: int = 200) -> list[dict[str, Any]]: ...
    async def get_conversation(self, user_id: str, conversation_id: str) -> dict[str, Any]: ...
    async def update_conversation(self, user_id: str, conversation_id: str, title: str) -> dict[str, Any]: ...
    async def delete_conversation(self, user_id: str, conversation_id: str) -> None: ...
    async def messages(self, conversation_id: str) -> list[Message]: ...

    async def create_run(self, user_id: str, conversation_id: str, text: str, model: str | None) -> Run: ...
    async def get_run(self, run_id: str, user_id: str | None = None) -> Run: ...
    async def list_runs(
        self, user_id: str, active: bool | None = None, limit: int = 100, conversation_id: str | None = None
    ) -> list[Run]: ...
    async def active_run(self, conversation_id: str) -> Run | None: ...
    async def runs_with_status(self, statuses: Iterable[RunStatus]) -> list[Run]: ...
    async def request_cancel(self, run_id: str) -> bool: ...

    async def write(self, batch: WriteBatch) -> None: ...
    def write_soon(self, batch: WriteBatch, done: Callable[[BaseException | None], None]) -> WriteOutcome:
        """Start committing `batch`; `done(None)` or `done(error)` is called on this loop when it
        ends, at the latest in the loop's turn the outcome reaches it, sooner if the caller
        delivers the returned outcome once it is `ready`. The journal's path: no task waits, so
        publishing follows the commit without a loop turn."""
    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[Event]: ...
