"""The write path and exactly-once delivery, with a real SQLite file and the in-memory bus."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, create_engine, event
from tests.worlds import World, check_a_mixed_batch, open_world, piece

from onward.bus.memory import MemoryBus
from onward.core.events import (
    Event,
    MessageDelta,
    ReasoningDelta,
    RunCompleted,
    RunStarted,
    ToolCallDelta,
    ToolOutput,
    ToolStarted,
    encode,
)
from onward.core.runs import RunStatus
from onward.delivery import PAGE, follow, wait_events
from onward.journal import Journal
from onward.store.base import RunChange, WriteBatch, WriteOutcome
from onward.store.db import CHECKPOINT_GIVE_UP
from onward.store.sql import SqlStore


async def _started_run(w: World) -> str:
    run = await w.store.create_run(w.user, w.conversation, "hi", None)
    assert await w.journal.transition(
        run.id, 0, {RunStatus.QUEUED}, {"status": "running"}, RunStarted()
    )
    return run.id


async def _collect(w: World, run_id: str, after: int) -> list[int]:
    seqs: list[int] = []
    async for batch in follow(w.store, w.bus, run_id, after):
        seqs.extend(e.seq for e in batch)
    return seqs


async def test_seq_is_contiguous_and_terminal_is_last(world: World) -> None:
    rid = await _started_run(world)
    for i in range(300):
        world.journal.record(rid, piece(i, str(i)))
    await world.journal.commit(rid, RunCompleted(), change={"status": "completed"})
    events = await world.store.events(rid, 0, 10_000)
    assert [e.seq for e in events] == list(range(1, 303))
    assert events[-1].type == "run.completed" and events[-1].terminal
    assert sum(e.terminal for e in events) == 1
    run = await world.store.get_run(rid)
    assert run.last_seq == 302 and run.status is RunStatus.COMPLETED


async def test_readers_joining_at_random_points_get_every_event_once(world: World) -> None:
    rid = await _started_run(world)
    total = 3000
    rng = random.Random(7)
    readers: list[tuple[int, asyncio.Task[list[int]]]] = []

    async def produce() -> None:
        for i in range(total):
            world.journal.record(rid, piece(i))
            if i % 100 == 0:
                # readers join while events are stored, in flight and not yet produced
                after = rng.randint(0, i + 1)
                readers.append((after, asyncio.create_task(_collect(world, rid, after))))
                await asyncio.sleep(0)
            if i % 500 == 0:
                await world.journal.flush()
        await world.journal.commit(rid, RunCompleted(), change={"status": "completed"})

    await produce()
    last = total + 2
    for after, task in readers:
        seqs = await asyncio.wait_for(task, 10)
        assert seqs == list(range(after + 1, last + 1))


async def test_slow_reader_overflows_its_buffer_and_still_gets_everything(world: World) -> None:
    rid = await _started_run(world)
    sub_seen: list[int] = []

    async def slow() -> None:
        async for batch in follow(world.store, world.bus, rid, 0):
            sub_seen.extend(e.seq for e in batch)
            await asyncio.sleep(0.01)  # a deliberately slow consumer, well past the 500-event buffer

    task = asyncio.create_task(slow())
    for k in range(5):
        for i in range(400):
            world.journal.record(rid, piece(k * 400 + i))
        await world.journal.flush()
    await world.journal.commit(rid, RunCompleted(), change={"status": "completed"})
    await asyncio.wait_for(task, 20)
    assert sub_seen == list(range(1, 2003))


async def test_deltas_of_one_stream_recorded_before_their_batch_is_taken_are_one_event(world: World) -> None:
    """Pieces of one message join (the first piece's seq and ts, the texts in order); anything
    else of the run, another stream, or the batch being taken starts a new event."""
    rid = await _started_run(world)
    sub = world.bus.subscribe(rid)
    journal = world.journal
    journal.record(rid, MessageDelta(message_id="m", text="Hel"))
    journal.record(rid, MessageDelta(message_id="m", text="lo"), MessageDelta(message_id="m", text=" world"))
    journal.record(rid, ReasoningDelta(message_id="m", text="hmm"))  # another stream
    journal.record(rid, ToolOutput(call_id="c", stream="stdout", text="a\n"))
    journal.record(rid, ToolOutput(call_id="c", stream="stdout", text="b\n"))
    journal.record(rid, ToolOutput(call_id="c", stream="stderr", text="oops"))
    journal.record(rid, ToolStarted(call_id="d", name="run_command", arguments="{}"))  # not a delta
    journal.record(rid, ToolOutput(call_id="c", stream="stderr", text="later"))
    await journal.flush()
    journal.record(rid, ToolOutput(call_id="c", stream="stderr", text="next batch"))
    await journal.commit(rid, RunCompleted(), change={"status": "completed"})

    stored = await world.store.events(rid, 0, 100)
    assert [(e.seq, e.type, e.data.get("text")) for e in stored] == [
        (1, "run.started", None),
        (2, "message.delta", "Hello world"),
        (3, "reasoning.delta", "hmm"),
        (4, "tool.output", "a\nb\n"),
        (5, "tool.output", "oops"),
        (6, "tool.started", None),
        (7, "tool.output", "later"),
        (8, "tool.output", "next batch"),
        (9, "run.completed", None),
    ]
    assert [e.json for e in sub.take()] == [e.json for e in stored[1:]]  # published as stored
    assert (await world.store.get_run(rid)).last_seq == 9


async def test_a_joined_delta_keeps_the_first_pieces_ts_and_stays_within_the_text_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SqlStore(f"sqlite:///{tmp_path / 'onward.db'}")
    await store.init()
    journal = Journal(store, MemoryBus(), flush_interval=60, text_limit=10)
    user = await store.ensure_user("local")
    conv = await store.create_conversation(user, "t")
    w = World(store, journal.bus, journal, user, conv["id"])  # type: ignore[arg-type]
    rid = await _started_run(w)
    before = time.time()
    journal.record(rid, ToolCallDelta(call_id="c", name="f", arguments_delta='{"a": '))
    between = time.time()
    journal.record(rid, ToolCallDelta(call_id="c", name="f", arguments_delta="1, "))
    journal.record(rid, ToolCallDelta(call_id="c", name="f", arguments_delta='"b": 2}'))  # would pass 10
    journal.record(rid, ToolCallDelta(call_id="c", name="f", arguments_delta="x" * 12))  # alone: as it is
    journal.record(rid, ToolCallDelta(call_id="e", name="f", arguments_delta="{}"))  # another call
    await journal.flush()
    stored = await store.events(rid, 1, 100)
    assert [e.data["arguments_delta"] for e in stored] == ['{"a": 1, ', '"b": 2}', "x" * 12, "{}"]
    assert [e.seq for e in stored] == [2, 3, 4, 5]
    assert before - 1e-6 <= stored[0].ts <= between  # the first piece's (ts is kept to the µs)
    await journal.close()
    await store.close()


async def test_long_poll_waits_for_the_next_event(world: World) -> None:
    rid = await _started_run(world)
    waiter = asyncio.create_task(wait_events(world.store, world.bus, rid, 1, 100, 5.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    world.journal.record(rid, MessageDelta(message_id="m", text="x"))
    events = await asyncio.wait_for(waiter, 2)
    assert [e.seq for e in events] == [2]


async def test_follow_after_terminal_returns_at_once(world: World) -> None:
    rid = await _started_run(world)
    await world.journal.commit(rid, RunCompleted(), change={"status": "completed"})
    assert await asyncio.wait_for(_collect(world, rid, 2), 2) == []
    assert await asyncio.wait_for(_collect(world, rid, 0), 2) == [1, 2]


async def test_one_active_run_per_conversation(world: World) -> None:
    from onward.errors import ConversationBusy

    await world.store.create_run(world.user, world.conversation, "a", None)
    with pytest.raises(ConversationBusy):
        await world.store.create_run(world.user, world.conversation, "b", None)


async def _adopted_run(store: SqlStore, bus: MemoryBus, flush_interval: float) -> tuple[Journal, str]:
    """`store` initialized, a journal over it, and one run the journal has adopted."""
    await store.init()
    journal = Journal(store, bus, flush_interval=flush_interval)
    user = await store.ensure_user("local")
    conv = await store.create_conversation(user, "t")
    run = await store.create_run(user, conv["id"], "hi", None)
    journal.adopt(run.id, 0)
    return journal, run.id


Done = Callable[[BaseException | None], None]


def _reported(done: Done) -> tuple[WriteOutcome, Done]:
    """An outcome for `done`, and the callback that reports it (as the writer thread would)."""
    outcome = WriteOutcome(done)

    def report(error: BaseException | None) -> None:
        outcome.arrive(error)
        outcome.deliver()

    return outcome, report


class FlakyStore(SqlStore):
    """A real SQLite store whose first `failures` batch writes fail, like a full or locked disk."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url)
        self.failures = failures

    def write_soon(self, batch, done):  # type: ignore[no-untyped-def]
        if self.failures > 0 and batch.events:
            self.failures -= 1
            outcome = WriteOutcome(done)
            outcome.arrive(OSError("disk I/O error"))
            asyncio.get_running_loop().call_soon(outcome.deliver)
            return outcome
        return super().write_soon(batch, done)


async def test_a_failed_write_is_retried_without_gaps_or_loss(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = FlakyStore(f"sqlite:///{tmp_path / 'onward.db'}", failures=0)
    await store.init()
    bus = MemoryBus()
    journal = Journal(store, bus, flush_interval=0.005)
    user = await store.ensure_user("local")
    conv = await store.create_conversation(user, "t")
    w = World(store, bus, journal, user, conv["id"])
    rid = await _started_run(w)
    reader = asyncio.create_task(_collect(w, rid, 0))
    store.failures = 2
    for i in range(50):
        journal.record(rid, piece(i))
    await asyncio.wait_for(journal.commit(rid, RunCompleted(), change={"status": "completed"}), 10)
    assert store.failures == 0
    assert [e.seq for e in await store.events(rid, 0, 100)] == list(range(1, 53))
    assert await asyncio.wait_for(reader, 5) == list(range(1, 53))
    await journal.close()
    await store.close()


class SlowStore(SqlStore):
    """A real SQLite store whose batch writes take a while, so a close can land in the middle."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writing = asyncio.Event()

    def write_soon(self, batch, done):  # type: ignore[no-untyped-def]
        if batch.events:
            self.writing.set()
            outcome, report = _reported(done)
            asyncio.get_running_loop().call_later(0.2, super().write_soon, batch, report)
            return outcome
        return super().write_soon(batch, done)


async def test_close_waits_for_the_write_under_way(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SlowStore(f"sqlite:///{tmp_path / 'onward.db'}")
    journal, rid = await _adopted_run(store, MemoryBus(), 0.001)
    journal.record(rid, MessageDelta(message_id="m", text="kept"))
    await asyncio.wait_for(store.writing.wait(), 5)
    await journal.close()  # the batch is with the store now, not in the journal's queue
    assert [e.seq for e in await store.events(rid)] == [1]
    await store.close()


class HeldStore(SqlStore):
    """A real SQLite store that holds each batch write until the test lets it go, and records
    what the bus held at the moment the journal's callback returned."""

    def __init__(self, url: str, bus: MemoryBus) -> None:
        super().__init__(url)
        self.bus = bus
        self.held: list[tuple[WriteBatch, Done]] = []
        self.after_callback: list[tuple[list[int], int]] = []  # (the bus's tail, writes then held)
        self.holding = asyncio.Event()

    def write_soon(self, batch, done):  # type: ignore[no-untyped-def]
        outcome, report = _reported(done)
        self.held.append((batch, report))
        self.holding.set()
        return outcome

    async def release(self, run_id: str) -> None:
        batch, done = self.held.pop(0)
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def reported(error: BaseException | None) -> None:
            done(error)
            self.after_callback.append(([e.seq for e in self.bus.recent(run_id, 0) or []], len(self.held)))
            outcome.set_result(None)

        super().write_soon(batch, reported)
        await outcome


async def test_a_commit_is_published_and_the_next_batch_handed_over_in_the_callback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No task sits between the store and the bus: when the commit's outcome arrives, its events
    are published and whatever queued during the write (here for longer than the flush interval)
    is already with the store when the callback returns."""
    bus = MemoryBus()
    store = HeldStore(f"sqlite:///{tmp_path / 'onward.db'}", bus)
    journal, rid = await _adopted_run(store, bus, 0.01)
    journal.record(rid, piece(1, "a"))
    await asyncio.wait_for(store.holding.wait(), 5)  # after the flush interval, the batch goes to the store
    journal.record(rid, piece(2, "b"))
    await asyncio.sleep(0.03)  # the second event waits longer than flush_interval for the first write
    assert len(store.held) == 1
    await store.release(rid)
    assert store.after_callback == [([1], 1)]  # published, and event 2 already handed over
    await store.release(rid)
    assert store.after_callback[-1] == ([1, 2], 0)
    await journal.close()
    await store.close()


class ArrivingStore(SqlStore):
    """A real SQLite store whose batch writes the test commits, then marks as arrived, as the
    writer thread does, without scheduling the call on the loop."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.taken: list[tuple[WriteBatch, WriteOutcome]] = []
        self.taking = asyncio.Event()

    def write_soon(self, batch, done):  # type: ignore[no-untyped-def]
        outcome = WriteOutcome(done)
        self.taken.append((batch, outcome))
        self.taking.set()
        return outcome

    async def commit_taken(self) -> tuple[list[int], WriteOutcome]:
        """Commit the batch the journal handed over last and mark its outcome arrived (not
        delivered); returns the batch's seqs."""
        batch, outcome = self.taken.pop()
        await self.write(batch)
        outcome.arrive(None)
        return [e.seq for e in batch.events], outcome


async def test_a_commit_that_came_back_is_published_by_the_next_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Under load the loop's turn lasts milliseconds: the writer's scheduled call waited for it
    (8 ms at the median with 500 runs streaming). The next record takes the outcome at once."""
    bus = MemoryBus()
    store = ArrivingStore(f"sqlite:///{tmp_path / 'onward.db'}")
    journal, rid = await _adopted_run(store, bus, 0.001)
    journal.record(rid, piece(1, "a"))
    await asyncio.wait_for(store.taking.wait(), 5)
    await store.commit_taken()
    assert bus.recent(rid, 0) is None  # nothing published before the journal takes the outcome
    store.taking.clear()
    journal.record(rid, piece(2, "b"))
    assert [e.seq for e in bus.recent(rid, 0) or []] == [1]  # in the record call itself
    await asyncio.wait_for(store.taking.wait(), 5)  # and the journal goes on with the next batch
    seqs, outcome = await store.commit_taken()
    assert seqs == [2]
    outcome.deliver()  # the loop's scheduled call, when no record comes first
    assert [e.seq for e in bus.recent(rid, 0) or []] == [1, 2]
    await journal.close()
    await store.close()


async def test_a_due_flush_is_taken_by_the_next_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A busy loop runs its timers once per turn; a record made after the flush interval hands
    the batch to the store in the call, with itself in it."""
    store = ArrivingStore(f"sqlite:///{tmp_path / 'onward.db'}")
    journal, rid = await _adopted_run(store, MemoryBus(), 0.01)
    journal.record(rid, MessageDelta(message_id="m", text="a"))
    journal.record(rid, ToolOutput(call_id="c", stream="stdout", text="b"))
    assert store.taken == []  # not due yet
    time.sleep(0.015)  # noqa: ASYNC251  # a turn of the loop that outlasts the flush interval
    journal.record(rid, ToolOutput(call_id="c", stream="stdout", text="c"))
    assert len(store.taken) == 1  # handed over in the call
    seqs, outcome = await store.commit_taken()
    assert seqs == [1, 2]  # b and c joined
    outcome.deliver()
    await journal.close()
    await store.close()


async def test_the_journals_commit_goes_ahead_of_claims_queued_before_it(world: World) -> None:
    """A burst of run starts queues a claim per run; the events of runs already streaming must
    not wait in one transaction with all of them. Only the journal's commits go first."""
    streaming = await _started_run(world)
    other = await world.store.create_conversation(world.user, "second")
    queued = await world.store.create_run(world.user, other["id"], "hi", None)
    loop = asyncio.get_running_loop()
    holding, release = asyncio.Event(), threading.Event()

    def hold(_conn: Connection) -> None:
        loop.call_soon_threadsafe(holding.set)
        release.wait(10)

    order: list[str] = []
    busy = asyncio.ensure_future(world.store.db.write(hold))
    try:
        await holding.wait()
        claim = asyncio.ensure_future(world.journal.transition(
            queued.id, 0, {RunStatus.QUEUED}, {"status": "running"}, RunStarted()
        ))
        await asyncio.sleep(0)  # the claim is queued with the writer ...
        step = asyncio.ensure_future(world.journal.commit(streaming, piece(1, "a")))  # ... then the step
        claim.add_done_callback(lambda _f: order.append("claim"))
        step.add_done_callback(lambda _f: order.append("step"))
        for _ in range(100):  # the step's batch goes to the writer on the loop's next turn
            if world.journal._writing:
                break
            await asyncio.sleep(0)
        assert world.journal._writing
    finally:
        release.set()
    await asyncio.gather(busy, claim, step)
    assert order == ["step", "claim"]
    assert claim.result() is True


@pytest.mark.parametrize("size", [1, 16, 17, 1024, 1025, 2100])
async def test_a_batch_of_any_size_is_stored_exactly(world: World, size: int) -> None:
    """SQLite takes events in statements of up to 1,024 rows, the last padded with NULL rows."""
    run = await world.store.create_run(world.user, world.conversation, "hi", None)
    events = [encode(run.id, seq, MessageDelta(message_id="m", text=f"{seq}\u00e9\n")) for seq in range(1, size + 1)]
    await world.store.write(WriteBatch(events=events))
    assert await world.store.events(run.id, 0, 10_000) == events
    assert (await world.store.get_run(run.id)).last_seq == size


async def test_a_batchs_messages_and_run_changes_are_stored_as_if_one_after_another(world: World) -> None:
    await check_a_mixed_batch(world)


async def test_nul_in_text_is_stored_as_a_replacement_character(world: World) -> None:
    """SQLite could hold NUL, Postgres cannot; both store U+FFFD so history is the same on both."""
    run = await world.store.create_run(world.user, world.conversation, "a\x00b", None)
    assert run.input == "a\ufffdb"
    assert [m.content for m in await world.store.messages(world.conversation)] == ["a\ufffdb"]


def _events(run_id: str, seqs: range, terminal_at: int | None = None) -> list[Event]:
    return [
        encode(run_id, seq, RunCompleted() if seq == terminal_at else MessageDelta(message_id="m", text=str(seq)))
        for seq in seqs
    ]


def test_the_bus_keeps_a_contiguous_tail_of_each_active_run() -> None:
    bus = MemoryBus(tail_events=4)
    assert bus.recent("r", 0) is None  # nothing published here: read the store
    bus.publish(_events("r", range(1, 4)))
    assert [e.seq for e in bus.recent("r", 0) or []] == [1, 2, 3]
    assert [e.seq for e in bus.recent("r", 2) or []] == [3]
    assert bus.recent("r", 3) == []  # nothing newer yet
    bus.publish(_events("r", range(4, 7)))  # the tail keeps 3..6
    assert bus.recent("r", 1) is None  # seq 2 is no longer held
    assert [e.seq for e in bus.recent("r", 2) or []] == [3, 4, 5, 6]
    bus.publish(_events("r", range(9, 10)))  # a gap (never expected) starts the tail over
    assert bus.recent("r", 6) is None and [e.seq for e in bus.recent("r", 8) or []] == [9]
    bus.publish(_events("r", range(10, 11), terminal_at=10))  # ended: readers use the store
    assert bus.recent("r", 9) is None
    off = MemoryBus(tail_events=0)  # replay_tail_events=0: always the store
    off.publish(_events("r", range(1, 3)))
    assert off.recent("r", 0) is None


async def test_a_reconnecting_reader_of_an_active_run_is_served_from_memory(world: World) -> None:
    """Replay from the tail: exact (same events as the store) and without a store read."""
    rid = await _started_run(world)
    for i in range(50):
        world.journal.record(rid, piece(i, str(i)))
    await world.journal.flush()
    stored = [e.seq for e in await world.store.events(rid)]
    reads: list[int] = []
    real_events = world.store.events

    async def counting(run_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        reads.append(after)
        return await real_events(run_id, after, limit)

    world.store.events = counting  # type: ignore[method-assign]
    stream = follow(world.store, world.bus, rid, after=10, seen_active=True)
    first = await anext(stream)
    assert [e.seq for e in first] == stored[10:] and reads == []
    world.journal.record(rid, MessageDelta(message_id="m", text="live"))
    live = await asyncio.wait_for(anext(stream), 5)
    assert [e.seq for e in live] == [stored[-1] + 1]
    await stream.aclose()


async def test_a_batch_of_many_runs_is_stored_exactly(world: World) -> None:
    """One group commit spanning runs (SQLite writes it as one JSON-fed statement): every event
    back byte for byte, with its ts, and every run's last_seq."""
    runs = []
    for _ in range(3):  # one active run per conversation
        world.conversation = (await world.store.create_conversation(world.user, "another"))["id"]
        runs.append(await _started_run(world))
    subs = {rid: world.bus.subscribe(rid) for rid in runs}
    texts: dict[str, list[str]] = {rid: [] for rid in runs}
    for i in range(200):
        rid = runs[i % 3]
        text = random.choice(["x", 'quote " and \\ slash', "ünï 😀", "line\nbreak"]) + str(i)
        texts[rid].append(text)
        world.journal.record(rid, piece(i, text))
    await world.journal.flush()
    for rid in runs:
        published = subs[rid].take()
        stored = await world.store.events(rid, 1, 1000)
        assert [(e.seq, e.type, e.json, e.ts) for e in stored] == [(e.seq, e.type, e.json, e.ts) for e in published]
        assert [e.data["text"] for e in stored] == texts[rid]
        assert (await world.store.get_run(rid)).last_seq == published[-1].seq


def _autocheckpoint(conn: Connection) -> object:
    """The writer connection's automatic checkpoint threshold (0: off)."""
    return conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()


async def test_wal_checkpoints_run_off_the_write_path(world: World) -> None:
    """The writer never checkpoints (autocheckpoint off); the database does it on its own thread
    after writes, and the WAL's frames are all copied back."""
    db = world.store.db
    assert db.is_sqlite
    assert await db.write(_autocheckpoint) == 0
    db.checkpoint_interval = 0  # every write may start one
    rid = await _started_run(world)
    for i in range(500):
        world.journal.record(rid, piece(i, "y" * 200 + str(i)))
    await world.journal.flush()
    result = await db.checkpoint()
    assert result is not None
    busy, frames, copied = result
    assert busy == 0 and frames > 0 and copied == frames


async def test_the_wal_starts_over_although_writes_came_during_its_checkpoint(world: World) -> None:
    """SQLite starts the WAL over only when a write begins with every frame copied back. Frames
    that came while a checkpoint ran (here: past a reader's snapshot, which that checkpoint may not
    copy) used to stay, and under steady load the WAL grew without end; now the writer copies them
    back once it is idle, and the next write starts the WAL over."""
    db = world.store.db
    db.catch_up_frames = 0  # however short the WAL
    rid = await _started_run(world)
    path = db._writer.url.database
    assert path is not None
    reader = sqlite3.connect(path, check_same_thread=False)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM runs").fetchall()  # a snapshot: the frames so far
        for i in range(300):
            world.journal.record(rid, piece(i, "z" * 300))
        await world.journal.flush()

        def snapshot_ends(*_: object) -> None:  # right after the checkpoint's statement
            reader.rollback()

        event.listen(db._checkpointer, "after_cursor_execute", snapshot_ends)
        # The checkpoint copies back the frames up to the snapshot; then the writer, idle, the rest.
        busy, frames, copied = await db.checkpoint() or (1, 0, 0)
        event.remove(db._checkpointer, "after_cursor_execute", snapshot_ends)
    finally:
        reader.close()
    assert busy == 0 and copied == frames > 0, "the WAL was left with frames to copy back"
    world.journal.record(rid, piece(300, "after"))
    await world.journal.flush()
    _, frames_now, _ = await db.checkpoint() or (1, 0, 0)
    assert frames_now < frames  # started over


async def test_when_checkpoints_keep_failing_the_writer_checkpoints_again(world: World) -> None:
    """A WAL that nobody checkpoints grows without bound: after CHECKPOINT_GIVE_UP failures in a
    row, SQLite's own checkpointing in the writer's commits comes back."""
    db = world.store.db
    db._checkpointer.dispose()
    db._checkpointer = create_engine("sqlite:////nonexistent-onward-dir/x.db")  # cannot open
    for _ in range(CHECKPOINT_GIVE_UP):
        await db.checkpoint()
    await _started_run(world)  # a write, queued on the writer thread after the restore
    assert await db.write(_autocheckpoint) == 1000


async def test_a_long_replay_from_the_store_lets_other_tasks_run_between_pages(world: World) -> None:
    """Store reads run on the event loop's thread; a reader replaying a long finished run must not
    hold the loop for the whole log (every other stream would stall behind it)."""
    rid = await _started_run(world)
    for i in range(2 * PAGE + 10):
        world.journal.record(rid, piece(i, str(i)))
    await world.journal.commit(rid, RunCompleted(), change={"status": "completed"})
    world.journal.release(rid)

    ticks = 0
    seen_at_page: list[int] = []

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    try:
        seqs: list[int] = []
        async for batch in follow(world.store, world.bus, rid, 0):
            seen_at_page.append(ticks)
            seqs.extend(e.seq for e in batch)
    finally:
        other.cancel()
    assert seqs == list(range(1, 2 * PAGE + 13))  # run.started, the deltas, run.completed
    assert len(seen_at_page) == 3
    assert seen_at_page[0] < seen_at_page[1] < seen_at_page[2], seen_at_page


class _CountingStore(SqlStore):
    """The real store, failing loudly instead of letting a reader spin on it forever."""

    reads = 0

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        self.reads += 1
        assert self.reads < 50, "follow() keeps re-reading the store without making progress"
        return await super().events(run_id, after, limit)


async def test_an_end_committed_but_not_yet_published_is_replayed_from_the_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The window between a commit and its publish: the run is terminal in the database, the bus's
    tail still ends before the terminal event. A reader arriving then, after the tail's last seq,
    must get the end from the store; asking the bus again and again spun (with store reads that did
    not suspend the task, forever: this hung the bench's resume scenario)."""
    store = _CountingStore(f"sqlite:///{tmp_path / 'onward.db'}")
    await store.init()
    try:
        async with open_world(store, MemoryBus()) as w:
            rid = await _started_run(w)
            w.journal.record(rid, MessageDelta(message_id="m", text="a"))
            await w.journal.flush()  # seq 1 and 2 committed and published: the bus's tail is [1, 2]
            w.journal.release(rid)
            end = encode(rid, 3, RunCompleted())
            await store.write(WriteBatch(events=[end], changes=[RunChange(rid, {"status": "completed"})]))
            # committed, not published (the journal's publish would come next)
            assert w.bus.recent(rid, 2) == []
            seqs = await asyncio.wait_for(_collect(w, rid, after=2), timeout=10)
            assert seqs == [3]
    finally:
        await store.close()
