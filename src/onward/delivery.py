"""Exactly-once delivery of a run's events from any point, for every transport.

Subscribe first, then replay (from the bus's tail of an active run when it reaches back far
enough, else from the store), then take live events, dropping any `seq` already delivered.
Events are published only after they are committed, so every event is either in the replay or
arrives live after the subscription began: there is no window where one is neither. A reader
whose live buffer overflows goes back to the store and continues from its last `seq`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable

from onward.bus.base import EventBus, Lagged, Subscription
from onward.core.events import Event
from onward.store.base import Store

PAGE = 500  # events per store read (≤ SCAN_ABOVE_ROWS: read on the loop's thread, briefly)


class Behind(Exception):
    """The live events no longer follow on from what the reader has: catch up again."""


class Follower:
    """One reader's place in a run's log: `catch_up()` replays, then `live()` or `next_live()`
    give what is published after it, each event exactly once, in order."""

    def __init__(self, store: Store, bus: EventBus, run_id: str, after: int = 0, seen_active: bool = False) -> None:
        """`seen_active`: the caller read the run as active before. Then an empty first replay
        cannot mean "ended before `after`" (had it ended since, the replay would hold its terminal
        event, or the event would arrive live), which saves a status query on every stream opened."""
        self.store = store
        self.bus = bus
        self.run_id = run_id
        self.last = self._start = after
        self.ended = False  # the terminal event was delivered (or the run ended at or before `after`)
        self._seen_active = seen_active
        self._from_store = False
        self._sub: Subscription | None = None

    async def catch_up(self) -> AsyncGenerator[list[Event], None]:
        """Subscribe (again), then yield what was committed after `last` until the replay meets
        the live events. Afterwards `ended` says whether there is anything more to follow."""
        while True:
            self.close()
            self._sub = self.bus.subscribe(self.run_id)
            while True:
                # An active run's recent events are in the bus (committed ones only, and read
                # after subscribing, so whatever the snapshot lacks arrives live); else the store.
                page = None if self._from_store else self.bus.recent(self.run_id, self.last)
                complete = page is not None
                if page is None:
                    page = await self.store.events(self.run_id, after=self.last, limit=PAGE)
                if page:
                    self.last = page[-1].seq
                    self.ended = page[-1].terminal
                    yield page
                    if self.ended:
                        return
                if complete or len(page) < PAGE:
                    break
            if self.last != self._start or self._seen_active or self._from_store:
                return
            if not (await self.store.get_run(self.run_id)).status.is_terminal:
                return
            # Nothing replayed and the run has ended: the reader asked for events after the
            # terminal one — or the end is committed but not yet published, so the bus's tail
            # lacks it: replay from the store, which has it (asking the bus again would spin
            # until the publish came).
            if not await self.store.events(self.run_id, self.last, 1):
                self.ended = True
                return
            self._from_store = True

    def live(self) -> list[Event]:
        """The live events after `last` received so far, without waiting ([] if none).
        Raises Behind when the reader must `catch_up()` again (its buffer overflowed)."""
        assert self._sub is not None, "catch_up() first"
        try:
            return self._fresh(self._sub.take())
        except Lagged:
            raise Behind(self.run_id) from None

    async def next_live(self, timeout: float | None = None) -> list[Event] | None:
        """`live()`, waiting for events up to `timeout` s: None if none came ([] if only repeats)."""
        assert self._sub is not None, "catch_up() first"
        try:
            batch = await self._sub.get(timeout=timeout)
        except Lagged:
            raise Behind(self.run_id) from None
        return self._fresh(batch) if batch else None

    def listen(self, callback: Callable[[], None] | None) -> None:
        """Call `callback()` as soon as live events arrive (see Subscription.listen)."""
        assert self._sub is not None, "catch_up() first"
        self._sub.listen(callback)

    def _fresh(self, batch: list[Event]) -> list[Event]:
        if not batch or batch[-1].seq <= self.last:
            return []
        if batch[0].seq > self.last + 1:
            raise Behind(self.run_id)  # should not happen; recover by replaying from the store
        fresh = batch if batch[0].seq == self.last + 1 else [e for e in batch if e.seq > self.last]
        self.last = fresh[-1].seq
        self.ended = fresh[-1].terminal
        return fresh

    def close(self) -> None:
        """Unsubscribe (leaving early, or before subscribing again)."""
        if self._sub is not None:
            self._sub.close()
            self._sub = None


async def follow(
    store: Store,
    bus: EventBus,
    run_id: str,
    after: int = 0,
    heartbeat: float | None = None,
    seen_active: bool = False,
) -> AsyncGenerator[list[Event], None]:
    """Yield batches of events with seq > after, in order, until the terminal event.

    With `heartbeat`, yields [] when nothing happened for that many seconds.
    """
    reader = Follower(store, bus, run_id, after, seen_active)
    try:
        while True:
            async for page in reader.catch_up():
                yield page
            if reader.ended:
                return
            while True:
                try:
                    batch = await reader.next_live(heartbeat)
                except Behind:
                    break  # re-subscribe and catch up from the store
                if batch is None:
                    yield []
                elif batch:
                    yield batch
                    if reader.ended:
                        return
    finally:
        reader.close()


async def wait_events(
    store: Store, bus: EventBus, run_id: str, after: int, limit: int, wait: float
) -> list[Event]:
    """Long-poll: stored events after `after`, or wait up to `wait` s for the first new ones."""
    sub = bus.subscribe(run_id)
    try:
        events = await store.events(run_id, after=after, limit=limit)
        deadline = time.monotonic() + wait
        while not events and wait > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if (await store.get_run(run_id)).status.is_terminal:
                events = await store.events(run_id, after=after, limit=limit)
                break
            try:
                live = await sub.get(timeout=remaining)
            except Lagged:
                live = []
                sub.close()
                sub = bus.subscribe(run_id)
            if live and live[-1].seq > after:
                events = await store.events(run_id, after=after, limit=limit)
            elif not live:
                break
        return events
    finally:
        sub.close()
