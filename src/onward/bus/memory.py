"""In-process fan-out for embedded mode: a set of subscriber buffers per run, no copies of events,
and the tail of each active run's log, so a reconnecting reader catches up without the store."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict, deque
from collections.abc import Callable

from onward.bus.base import Lagged
from onward.core.events import Event

log = logging.getLogger(__name__)


class MemorySubscription:
    def __init__(self, bus: MemoryBus, run_id: str, limit: int) -> None:
        self._bus = bus
        self.run_id = run_id
        self._limit = limit
        self._batches: deque[list[Event]] = deque()
        self._count = 0
        self._wakeup = Wakeup()
        self._listener: Callable[[], None] | None = None
        self.lagged = False
        self.closed = False

    def _push(self, events: list[Event]) -> None:
        if self.lagged:
            return
        if self._count + len(events) > self._limit:
            self.lagged = True
            self._batches.clear()
            self._count = 0
            self._bus._drop(self)
        else:
            self._batches.append(events)
            self._count += len(events)
        self._wakeup.set()
        if self._listener is not None:
            try:
                self._listener()
            except Exception:  # one reader's failure must not keep the events from the others
                log.exception("a subscriber's listener failed", extra={"run_id": self.run_id})

    async def get(self, timeout: float | None = None) -> list[Event]:
        """The events published since the last call, waiting for some; [] after `timeout` s."""
        if not self._batches and not self.lagged:
            await self._wakeup.wait(timeout)
        return self.take()

    def take(self) -> list[Event]:
        if self.lagged:
            raise Lagged(self.run_id)
        if not self._batches:
            return []
        if len(self._batches) == 1:
            out = self._batches.popleft()
        else:
            out = [e for batch in self._batches for e in batch]
            self._batches.clear()
        self._count = 0
        return out

    def listen(self, callback: Callable[[], None] | None) -> None:
        self._listener = callback

    def close(self) -> None:
        self._listener = None
        if not self.closed:
            self.closed = True
            self._bus._drop(self)


class Wakeup:
    """One waiter at a time, woken by `set()` or by its timeout.

    A bare future and a timer: asyncio.wait_for would wrap each wait in a Task, and every reader
    of every run waits here once per journal flush.
    """

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def set(self) -> None:
        _wake(self._waiter)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class MemoryBus:
    def __init__(self, subscriber_limit: int = 10_000, tail_events: int = 512) -> None:
        self._subs: defaultdict[str, set[MemorySubscription]] = defaultdict(set)
        self._limit = subscriber_limit
        self._tail_events = tail_events
        # The last `tail_events` events of each run with events published here and no terminal
        # event yet, contiguous by seq. Filled at publish, i.e. after commit, so it holds only
        # committed events; dropped with the terminal event (readers of a finished run use the store).
        self._tails: dict[str, deque[Event]] = {}

    def subscribe(self, run_id: str) -> MemorySubscription:
        sub = MemorySubscription(self, run_id, self._limit)
        self._subs[run_id].add(sub)
        return sub

    def publish(self, events: list[Event]) -> None:
        if not events:
            return
        by_run: dict[str, list[Event]] = {}
        for e in events:
            by_run.setdefault(e.run_id, []).append(e)
        for run_id, run_events in by_run.items():
            self._keep(run_id, run_events)
            for sub in list(self._subs.get(run_id, ())):
                sub._push(run_events)

    def recent(self, run_id: str, after: int) -> list[Event] | None:
        tail = self._tails.get(run_id)
        if not tail or tail[0].seq > after + 1:
            return None
        return list(itertools.islice(tail, max(0, after + 1 - tail[0].seq), None))

    def _keep(self, run_id: str, events: list[Event]) -> None:
        if events[-1].terminal or self._tail_events <= 0:
            self._tails.pop(run_id, None)
            return
        tail = self._tails.get(run_id)
        if tail is None or not tail or events[0].seq != tail[-1].seq + 1:
            # new here, or not contiguous (never expected): start over from these events
            tail = self._tails[run_id] = deque(maxlen=self._tail_events)
        tail.extend(events)

    def _drop(self, sub: MemorySubscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.run_id]

    async def close(self) -> None:
        self._subs.clear()
        self._tails.clear()
