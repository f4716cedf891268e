"""The journal: the single path by which run state is written and then published.

It numbers each run's events (`seq` is assigned here and nowhere else), gathers events, messages
and run changes from every run into one WriteBatch, commits it in one transaction, and only then
publishes the events. Deltas wait at most `flush_interval` before they are committed; anything a
caller awaits (status changes, completed messages, tool results) is flushed at once, together with
whatever is pending. Group commit keeps the cost per event low however many runs stream at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from onward.bus.base import EventBus
from onward.core.events import Event, EventData, encode
from onward.core.runs import RunStatus
from onward.store.base import RunChange, StaleTransition, Store, StoredMessage, WriteBatch

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, store: Store, bus: EventBus, flush_interval: float = 0.02, max_pending: int = 2000) -> None:
        self.store = store
        self.bus = bus
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self._seq: dict[str, int] = {}
        self._batch = WriteBatch()
        self._waiters: list[asyncio.Future[None]] = []
        self._oldest: float | None = None
        self._has_work = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None  # resolves when the write under way ends
        self._failures = 0

    # ownership -------------------------------------------------------------

    def adopt(self, run_id: str, last_seq: int) -> None:
        """This process now writes `run_id`'s events, continuing after `last_seq`."""
        self._seq[run_id] = last_seq

    def release(self, run_id: str) -> None:
        self._seq.pop(run_id, None)

    # writing -----------------------------------------------------------------

    def record(self, run_id: str, *items: EventData) -> list[Event]:
        """Queue events; they are committed within `flush_interval` and then published."""
        seq = self._seq[run_id]
        now = time.time()
        events = [encode(run_id, seq + i + 1, item, now) for i, item in enumerate(items)]
        self._seq[run_id] = seq + len(items)
        self._batch.events.extend(events)
        if self._oldest is None:
            self._oldest = time.monotonic()
            self._has_work.set()
        if len(self._batch.events) >= self.max_pending:
            self._urgent.set()
        return events

    def enqueue(
        self,
        run_id: str,
        *items: EventData,
        messages: Iterable[StoredMessage] = (),
        change: dict[str, object] | None = None,
    ) -> asyncio.Future[None]:
        """Queue a durable step; the returned future resolves once it is committed.

        Everything is queued synchronously, so a step that was enqueued will be written even if
        the caller is cancelled while it awaits the future.
        """
        self._batch.messages.extend(messages)
        if change:
            self._batch.changes.append(RunChange(run_id, dict(change)))
        if items:
            self.record(run_id, *items)
        elif self._oldest is None:
            self._oldest = time.monotonic()
            self._has_work.set()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._urgent.set()
        return fut

    async def commit(
        self,
        run_id: str,
        *items: EventData,
        messages: Iterable[StoredMessage] = (),
        change: dict[str, object] | None = None,
    ) -> None:
        await self.enqueue(run_id, *items, messages=messages, change=change)

    async def transition(
        self,
        run_id: str,
        last_seq: int,
        expect: Iterable[RunStatus],
        change: dict[str, object],
        *items: EventData,
        messages: Iterable[StoredMessage] = (),
    ) -> bool:
        """Compare-and-set a run's status and record events in one transaction of its own.

        This is how a process takes a run (queued → running) or ends one it does not execute
        (queued → cancelled, crash recovery). On success the run is adopted by this journal.
        The run is not owned here before the call, so nothing of it can be pending: the batch
        needs no flush of other runs' work first (which made claims wait behind busy runs).
        """
        if run_id in self._seq:
            raise RuntimeError(f"run {run_id} is already owned by this journal")
        batch = WriteBatch(messages=list(messages), changes=[RunChange(run_id, dict(change), frozenset(expect))])
        now = time.time()
        batch.events = [encode(run_id, last_seq + i + 1, item, now) for i, item in enumerate(items)]
        try:
            await self.store.write(batch)
        except StaleTransition:
            return False
        self._seq[run_id] = last_seq + len(items)
        self.bus.publish(batch.events)
        return True

    async def flush(self) -> None:
        """Commit everything queued so far (and wait for it), including a write under way."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)  # a failed write is back in the queue after this
        if not (self._batch or self._waiters):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._has_work.set()
        self._urgent.set()
        await fut

    # the writer --------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="onward-journal")

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            if not self._urgent.is_set() and self._oldest is not None:
                remaining = self.flush_interval - (time.monotonic() - self._oldest)
                if remaining > 0:
                    try:
                        await asyncio.wait_for(self._urgent.wait(), remaining)
                    except TimeoutError:
                        pass
            batch, waiters = self._batch, self._waiters
            self._batch, self._waiters = WriteBatch(), []
            self._oldest = None
            self._has_work.clear()
            self._urgent.clear()
            if not batch and not waiters:
                continue
            inflight = self._inflight = asyncio.get_running_loop().create_future()
            try:
                written = await self._commit(batch, waiters)
            finally:
                self._inflight = None
                inflight.set_result(None)
            if not written:
                await asyncio.sleep(min(0.05 * 2 ** min(self._failures, 5), 1.0))

    async def _commit(self, batch: WriteBatch, waiters: list[asyncio.Future[None]]) -> bool:
        """Write, then publish and wake the waiters; on failure put everything back (False)."""
        try:
            if batch:
                await self.store.write(batch)
        except Exception:
            # Never drop or renumber: put the batch back in front of what came since and
            # retry. Runs waiting on a durable step wait with it (natural backpressure).
            self._failures += 1
            log.exception("journal write failed (%d events, failure %d); retrying", len(batch.events), self._failures)
            self._requeue(batch, waiters)
            return False
        self._failures = 0
        self.bus.publish(batch.events)
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        return True

    def _requeue(self, batch: WriteBatch, waiters: list[asyncio.Future[None]]) -> None:
        later = self._batch
        batch.events.extend(later.events)
        batch.messages.extend(later.messages)
        batch.changes.extend(later.changes)
        self._batch = batch
        self._waiters = waiters + self._waiters
        self._oldest = time.monotonic()
        self._has_work.set()
        self._urgent.set()
