"""The journal: the single path by which run state is written and then published.

It numbers each run's events (`seq` is assigned here and nowhere else), gathers events, messages
and run changes from every run into one WriteBatch, commits it in one transaction, and only then
publishes the events. Deltas wait at most `flush_interval` before they are committed; anything a
caller awaits (status changes, completed messages, tool results) is flushed at once, together with
whatever is pending. Group commit keeps the cost per event low however many runs stream at once.

Consecutive deltas of one stream (a message's text, a command's stdout) that are recorded before
their batch is taken become one event: a reader sees the same text no later, and each further
piece costs an append instead of an event to serialize, store, publish and frame. Under load,
when a batch gathers several pieces per run, that was most of the cost of a streamed token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable

from onward.bus.base import EventBus
from onward.core.events import Event, EventData, encode
from onward.core.runs import RunStatus
from onward.store.base import (
    RunChange,
    StaleTransition,
    Store,
    StoredMessage,
    WriteBatch,
    WriteOutcome,
)

log = logging.getLogger(__name__)


class Journal:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        flush_interval: float = 0.02,
        max_pending: int = 2000,
        text_limit: int = 8192,
    ) -> None:
        self.store = store
        self.bus = bus
        self.flush_interval = flush_interval
        self.max_pending = max_pending  # items recorded since the last hand-over: then at once
        self.text_limit = text_limit  # most characters a joined delta grows to
        self._seq: dict[str, int] = {}
        self._batch = WriteBatch()
        self._open: dict[str, _OpenDelta] = {}  # each run's last delta, while more may join it
        self._pending = 0  # items recorded since the last hand-over
        self._waiters: list[asyncio.Future[None]] = []
        self._oldest: float | None = None  # when the oldest queued item was queued (monotonic)
        self._urgent = False  # something queued is awaited: write it at the next chance
        self._writing = False  # a batch is with the store; the next one waits for its outcome
        self._outcome: WriteOutcome | None = None  # that write's, while it is under way
        self._timer: asyncio.TimerHandle | None = None  # the next write (a flush, or a retry)
        self._soon = False  # `_take_soon` is scheduled for the next turn
        self._retrying = False  # `_timer` is a retry's backoff: nothing starts a write before it
        self._failures = 0

    # ownership -------------------------------------------------------------

    def adopt(self, run_id: str, last_seq: int) -> None:
        """This process now writes `run_id`'s events, continuing after `last_seq`."""
        self._seq[run_id] = last_seq

    def release(self, run_id: str) -> None:
        self._close(run_id)
        self._seq.pop(run_id, None)

    # writing -----------------------------------------------------------------

    def record(self, run_id: str, *items: EventData) -> None:
        """Queue events; they are committed within `flush_interval` and then published.

        A delta joins the run's previous event if that is a delta of the same stream still
        waiting for its batch (and the joined text stays within `text_limit`); the joined event
        keeps the first piece's `seq` and `ts`.

        Recording is what the loop does most under load, so it also keeps the writer's pace: a
        write under way that has come back is taken first (published, and the next batch handed
        over), and a batch whose flush is due goes to the store at once. Neither waits for the
        rest of the loop's turn, as the writer's callback and the flush timer do.
        """
        outcome = self._outcome
        if outcome is not None and outcome.ready:
            outcome.deliver()
        seq = self._seq[run_id]
        now = time.time()
        for item in items:
            if item.delta:
                current = self._open.get(run_id)
                if current is not None and current.takes(item, self.text_limit):
                    continue
                self._close(run_id)
                seq += 1
                self._open[run_id] = _OpenDelta(item, seq, now)
            else:
                self._close(run_id)
                seq += 1
                self._batch.events.append(encode(run_id, seq, item, now))
        self._seq[run_id] = seq
        self._pending += len(items)
        if self._oldest is None:
            self._oldest = time.monotonic()
            self._wanted(False)
        elif self._timer is not None and not self._retrying and time.monotonic() - self._oldest >= self.flush_interval:
            self._take()  # due: the timer would fire only once the loop's turn reaches it
        if self._pending >= self.max_pending:
            self._wanted(True)

    def _close(self, run_id: str) -> None:
        """The run's open delta goes into the batch as it is: nothing more joins it."""
        current = self._open.pop(run_id, None)
        if current is not None:
            self._batch.events.append(current.event(run_id))

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
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wanted(True)
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
        if not (self._batch or self._open or self._waiters or self._writing or self._retrying):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)  # settled with the batch after the one under way, if any
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._wanted(True)
        await fut

    async def close(self) -> None:
        await self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # the writer --------------------------------------------------------------
    #
    # No task: a timer (or, for an awaited step, the next loop turn) hands the batch to the store,
    # and the store's callback publishes it in the same loop turn the commit's outcome arrives,
    # then hands over what queued meanwhile. A task awaiting the commit would wake a turn later,
    # and under load a turn of the loop lasts milliseconds: every event waited for it twice. For
    # the same reason `record` takes an outcome that has arrived before the callback gets its turn.

    def _wanted(self, urgent: bool) -> None:
        """Something was queued: see that a write will take it."""
        if urgent:
            self._urgent = True
        if self._writing or self._retrying:
            return  # the outcome of the write under way, or the retry, takes it
        if urgent:
            if not self._soon:  # the next turn, not now: the rest of this turn joins the batch
                self._soon = True
                asyncio.get_running_loop().call_soon(self._take_soon)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self._on_timer)

    def _take_soon(self) -> None:
        self._soon = False
        if not (self._writing or self._retrying):
            self._take()

    def _on_timer(self) -> None:
        self._timer = None
        self._retrying = False
        if not self._writing:
            self._take()

    def _take(self) -> None:
        """Hand everything queued to the store in one batch."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._batch.events.extend(current.event(run_id) for run_id, current in self._open.items())
        self._open.clear()
        self._pending = 0
        batch, waiters = self._batch, self._waiters
        self._batch, self._waiters = WriteBatch(), []
        self._oldest = None
        self._urgent = False
        if not batch:
            _settle(waiters)
            return
        self._writing = True
        self._outcome = self.store.write_soon(batch, lambda error: self._written(batch, waiters, error))

    def _written(self, batch: WriteBatch, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        """The store's outcome: publish and wake the waiters, or put everything back and retry."""
        self._writing = False
        self._outcome = None
        if error is not None:
            # Never drop or renumber: put the batch back in front of what came since and
            # retry. Runs waiting on a durable step wait with it (natural backpressure).
            self._failures += 1
            log.error(
                "journal write failed (%d events, failure %d); retrying", len(batch.events), self._failures,
                exc_info=error,
            )
            self._requeue(batch, waiters)
            return
        self._failures = 0
        try:
            self.bus.publish(batch.events)
        except Exception:  # a subscriber's failure is its own; the log and the waiters go on
            log.exception("publishing %d events failed", len(batch.events))
        _settle(waiters)
        if self._oldest is None and not self._waiters:
            return
        due = self.flush_interval - (time.monotonic() - (self._oldest or 0.0))
        if self._urgent or due <= 0:
            self._take()  # the writer is free now: what queued during the write goes at once
        else:
            self._timer = asyncio.get_running_loop().call_later(due, self._on_timer)

    def _requeue(self, batch: WriteBatch, waiters: list[asyncio.Future[None]]) -> None:
        later = self._batch
        batch.events.extend(later.events)
        batch.messages.extend(later.messages)
        batch.changes.extend(later.changes)
        self._batch = batch
        self._waiters = waiters + self._waiters
        self._oldest = time.monotonic()
        self._urgent = True
        if self._timer is not None:
            self._timer.cancel()
        self._retrying = True
        delay = min(0.05 * 2 ** min(self._failures, 5), 1.0)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)


def _settle(waiters: list[asyncio.Future[None]]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)


class _OpenDelta:
    """A run's latest delta while later pieces of the same stream may still join it."""

    __slots__ = ("data", "key", "parts", "seq", "size", "ts")

    def __init__(self, data: EventData, seq: int, ts: float) -> None:
        self.data = data
        self.key = data.stream_key()
        text: str = getattr(data, data.text_field)
        self.parts = [text]
        self.size = len(text)
        self.seq = seq
        self.ts = ts

    def takes(self, item: EventData, limit: int) -> bool:
        """Join `item` if it continues this stream within `limit` characters."""
        if type(item) is not type(self.data) or item.stream_key() != self.key:
            return False
        text: str = getattr(item, item.text_field)
        if self.size + len(text) > limit:
            return False
        self.parts.append(text)
        self.size += len(text)
        return True

    def event(self, run_id: str) -> Event:
        data = self.data
        if len(self.parts) > 1:
            data = dataclasses.replace(data, **{data.text_field: "".join(self.parts)})
        return encode(run_id, self.seq, data, self.ts)
