"""In-process fan-out for embedded mode: a set of subscriber buffers per run, no copies of events."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

from onward.bus.base import Lagged
from onward.core.events import Event


class MemorySubscription:
    def __init__(self, bus: MemoryBus, run_id: str, limit: int) -> None:
        self._bus = bus
        self.run_id = run_id
        self._limit = limit
        self._batches: deque[list[Event]] = deque()
        self._count = 0
        self._ready = asyncio.Event()
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
        self._ready.set()

    async def get(self, timeout: float | None = None) -> list[Event]:
        if not self._batches and not self.lagged:
            self._ready.clear()
            try:
                if timeout is None:
                    await self._ready.wait()
                else:
                    await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return []
        if self.lagged:
            raise Lagged(self.run_id)
        if len(self._batches) == 1:
            out = self._batches.popleft()
        else:
            out = [e for batch in self._batches for e in batch]
            self._batches.clear()
        self._count = 0
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._drop(self)


class MemoryBus:
    def __init__(self, subscriber_limit: int = 10_000) -> None:
        self._subs: defaultdict[str, set[MemorySubscription]] = defaultdict(set)
        self._limit = subscriber_limit

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
            for sub in list(self._subs.get(run_id, ())):
                sub._push(run_events)

    def _drop(self, sub: MemorySubscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.run_id]

    async def close(self) -> None:
        self._subs.clear()
