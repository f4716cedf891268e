"""The EventBus protocol: publish committed events; subscribe to one run's live events.

A subscription has a bounded buffer. A reader that falls too far behind is not allowed to grow
memory: its subscription is marked lagged and the reader goes back to the store to catch up.
A bus may also keep the latest events of each active run (`recent`), so that a reader who
reconnects after a short drop catches up from memory instead of the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from onward.core.events import Event


class Lagged(Exception):
    """The subscriber fell behind its buffer limit; replay from the store to catch up."""


class Subscription(Protocol):
    async def get(self, timeout: float | None = None) -> list[Event]:
        """The next batch of live events (oldest first); [] on timeout. Raises Lagged."""
        ...

    def take(self) -> list[Event]:
        """The live events buffered so far (oldest first), without waiting; raises Lagged."""
        ...

    def listen(self, callback: Callable[[], None] | None) -> None:
        """Call `callback()` whenever events arrive (or the subscription lags), from the code that
        publishes them: a reader that can write without waiting need not wake a task for it."""
        ...

    def close(self) -> None: ...


class EventBus(Protocol):
    def subscribe(self, run_id: str) -> Subscription: ...
    def publish(self, events: list[Event]) -> None: ...

    def recent(self, run_id: str, after: int) -> list[Event] | None:
        """Every published event of the run with seq > `after`, if the bus still holds all of
        them ([] if there are none yet); None if it does not (then read the store)."""
        ...

    async def close(self) -> None: ...
