"""Exactly-once delivery of a run's events from any point, for every transport.

Subscribe first, then replay (from the bus's tail of an active run when it reaches back far
enough, else from the store), then take live events, dropping any `seq` already delivered.
Events are published only after they are committed, so every event is either in the replay or
arrives live after the subscription began: there is no window where one is neither. A reader
whose live buffer overflows goes back to the store and continues from its last `seq`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from onward.bus.base import EventBus, Lagged
from onward.core.events import Event
from onward.store.base import Store

PAGE = 500  # events per store read (≤ SCAN_ABOVE_ROWS: read on the loop's thread, briefly)


async def follow(
    store: Store,
    bus: EventBus,
    run_id: str,
    after: int = 0,
    heartbeat: float | None = None,
    seen_active: bool = False,
) -> AsyncGenerator[list[Event], None]:
    """Yield batches of events with seq > after, in order, until the terminal event.

    `seen_active`: the caller read the run as active before calling. Then an empty first replay
    cannot mean "ended before `after`" (had it ended since, the replay would hold its terminal
    event, or the event would arrive live), which saves a status query on every stream opened.

    With `heartbeat`, yields [] when nothing happened for that many seconds.
    """
    last = after
    from_store = False
    while True:
        sub = bus.subscribe(run_id)
        try:
            while True:
                # An active run's recent events are in the bus (committed ones only, and read
                # after subscribing, so whatever the snapshot lacks arrives live); else the store.
                page = None if from_store else bus.recent(run_id, last)
                complete = page is not None
                if page is None:
                    page = await store.events(run_id, after=last, limit=PAGE)
                if page:
                    last = page[-1].seq
                    yield page
                    if page[-1].terminal:
                        return
                if complete or len(page) < PAGE:
                    break
            if last == after and not seen_active and (await store.get_run(run_id)).status.is_terminal:
                # Nothing replayed and the run has ended: the reader asked for events after the
                # terminal one — or the end is committed but not yet published, so the bus's tail
                # lacks it: replay from the store, which has it (asking the bus again would spin
                # until the publish came).
                if not await store.events(run_id, last, 1):
                    return
                from_store = True
                continue
            while True:
                try:
                    batch = await sub.get(timeout=heartbeat)
                except Lagged:
                    break  # re-subscribe and catch up from the store
                if not batch:
                    yield []
                    continue
                if batch[-1].seq <= last:
                    continue
                if batch[0].seq > last + 1:
                    break  # should not happen; recover by replaying from the store
                fresh = batch if batch[0].seq == last + 1 else [e for e in batch if e.seq > last]
                last = fresh[-1].seq
                yield fresh
                if fresh[-1].terminal:
                    return
        finally:
            sub.close()


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
