"""The write path on Postgres: the journal's batches, conditional transitions, and racing claimers."""

from __future__ import annotations

import asyncio

import pytest

from onward.bus.memory import MemoryBus
from onward.core.events import MessageDelta, RunCompleted, RunStarted, encode
from onward.core.messages import Message
from onward.core.runs import RunStatus
from onward.delivery import follow
from onward.journal import Journal
from onward.store.base import RunChange, StaleTransition, StoredMessage, WriteBatch
from tests.worlds import World, piece


async def _started_run(w: World, text: str = "hi") -> str:
    conversation = (await w.store.create_conversation(w.user, text))["id"]
    run = await w.store.create_run(w.user, conversation, text, None)
    assert await w.journal.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "running"}, RunStarted())
    return run.id


async def _collect(w: World, run_id: str, after: int = 0) -> list[int]:
    seqs: list[int] = []
    async for batch in follow(w.store, w.bus, run_id, after):
        seqs.extend(e.seq for e in batch)
    return seqs


async def test_many_events_across_runs_are_stored_in_order_without_gaps(world: World) -> None:
    runs = [await _started_run(world, f"run {i}") for i in range(3)]
    readers = [asyncio.create_task(_collect(world, rid)) for rid in runs]
    deltas = 500
    for i in range(deltas):
        world.journal.record(runs[i % 3], piece(i, f"{i} "))
        if i % 100 == 99:
            await world.journal.flush()  # several group commits, each spanning all three runs
    for rid in runs:
        await world.journal.commit(rid, RunCompleted(usage={"total_tokens": 7}), change={"status": "completed"})

    for k, rid in enumerate(runs):
        count = len(range(k, deltas, 3)) + 2  # run.started, the deltas, run.completed
        events = await world.store.events(rid, 0, 10_000)
        assert [e.seq for e in events] == list(range(1, count + 1))
        assert [e.type for e in events] == ["run.started"] + ["message.delta"] * (count - 2) + ["run.completed"]
        assert [e.data["text"] for e in events[1:-1]] == [f"{i} " for i in range(k, deltas, 3)]
        assert all(e.body["seq"] == e.seq and e.body["run_id"] == rid for e in events)
        assert [e.seq for e in await world.store.events(rid, 50, 25)] == list(range(51, 76))
        assert await world.store.events(rid, count, 10) == []
        run = await world.store.get_run(rid)
        assert (run.last_seq, run.status) == (count, RunStatus.COMPLETED)
        assert await asyncio.wait_for(readers[k], 10) == list(range(1, count + 1))


async def test_a_stale_transition_writes_nothing(world: World) -> None:
    running = await _started_run(world, "running")
    finished = await _started_run(world, "finished")
    await world.journal.commit(finished, RunCompleted(), change={"status": "completed"})
    conversation = (await world.store.get_run(running)).conversation_id
    before = await world.store.messages(conversation)

    # The first change matches, the second does not: the whole batch is rolled back.
    batch = WriteBatch(
        events=[encode(running, 2, MessageDelta(message_id="m", text="lost"))],
        messages=[StoredMessage(conversation, len(before), Message(role="assistant", content="lost"))],
        changes=[
            RunChange(running, {"error": "lost"}, frozenset({RunStatus.RUNNING})),
            RunChange(finished, {"status": "running"}, frozenset({RunStatus.QUEUED})),
        ],
    )
    with pytest.raises(StaleTransition):
        await world.store.write(batch)

    assert [e.seq for e in await world.store.events(running)] == [1]
    assert [e.seq for e in await world.store.events(finished)] == [1, 2]
    assert await world.store.messages(conversation) == before
    run = await world.store.get_run(running)
    assert (run.status, run.last_seq, run.error) == (RunStatus.RUNNING, 1, None)
    assert (await world.store.get_run(finished)).status is RunStatus.COMPLETED

    world.journal.release(finished)
    taken = await world.journal.transition(finished, 2, {RunStatus.QUEUED}, {"status": "running"}, RunStarted())
    assert taken is False
    assert [e.seq for e in await world.store.events(finished)] == [1, 2]
    assert (await world.store.get_run(finished)).status is RunStatus.COMPLETED


async def test_two_journals_racing_to_claim_a_run_one_wins(world: World) -> None:
    other = Journal(world.store, MemoryBus(), flush_interval=0.005)
    try:
        for i in range(10):
            conversation = (await world.store.create_conversation(world.user, f"race {i}"))["id"]
            run = await world.store.create_run(world.user, conversation, "hi", None)
            claims = await asyncio.gather(
                *(j.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "running"}, RunStarted())
                  for j in (world.journal, other))
            )
            assert sorted(claims) == [False, True]
            assert [(e.seq, e.type) for e in await world.store.events(run.id)] == [(1, "run.started")]
            stored = await world.store.get_run(run.id)
            assert (stored.status, stored.last_seq) == (RunStatus.RUNNING, 1)
    finally:
        await other.close()
