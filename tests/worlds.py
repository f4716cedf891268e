"""A store with a journal writing through it, a bus, and a user with one conversation: the world
the store, journal and delivery tests (SQLite in tests/unit, Postgres in tests/integration) share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, text

from onward.bus.memory import MemoryBus
from onward.core.events import MessageDelta
from onward.core.messages import Message, ToolCall
from onward.core.runs import RunStatus
from onward.journal import Journal
from onward.store.base import RunChange, StoredMessage, WriteBatch
from onward.store.sql import SqlStore


@dataclass
class World:
    store: SqlStore
    bus: MemoryBus
    journal: Journal
    user: str
    conversation: str


@contextlib.asynccontextmanager
async def open_world(store: SqlStore, bus: MemoryBus, user: str = "local") -> AsyncIterator[World]:
    """A started journal over `store` (closed on exit; the store is the caller's)."""
    journal = Journal(store, bus, flush_interval=0.005)
    try:
        user_id = await store.ensure_user(user)
        conversation = await store.create_conversation(user_id, "first")
        yield World(store, bus, journal, user_id, conversation["id"])
    finally:
        await journal.close()


def piece(n: int, text: str = "x") -> MessageDelta:
    """A delta of a message of its own: consecutive pieces never join into one event (as deltas
    of one message do, Journal.record), so each is an event; for tests about many events."""
    return MessageDelta(message_id=f"m{n}", text=text)


async def check_a_mixed_batch(world: World) -> None:
    """One batch of messages and unconditional run changes, several for one run: stored as if
    applied one after another (SQLite writes each kind as one statement over a JSON array)."""
    store = world.store
    runs, convs = [], []
    for i in range(3):
        conv = (await store.create_conversation(world.user, f"batch {i}"))["id"]
        run = await store.create_run(world.user, conv, "hi", None)
        assert await world.journal.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "running"})
        runs.append(run.id)
        convs.append(conv)
    call = ToolCall("call_1", "read_file", '{"path": "a \\"quoted\\" name.txt"}')
    written = [
        Message(role="assistant", content=None, tool_calls=(call,), reasoning="ünïcødé ✓ 中文\n", id="msg_a",
                run_id=runs[0], meta={"usage": {"prompt_tokens": 12}}),
        Message(role="tool", content="", tool_call_id="call_1", id="msg_t", run_id=runs[0]),
        Message(role="assistant", content='line 1\nline "2" \\ \x00', id="msg_b", run_id=runs[1]),
    ]
    batch = WriteBatch(
        messages=[StoredMessage(convs[0], 1, written[0]), StoredMessage(convs[0], 2, written[1]),
                  StoredMessage(convs[1], 1, written[2])],
        changes=[
            RunChange(runs[0], {"status": "cancelling", "cancel_requested_at": 1.5}),
            RunChange(runs[1], {"status": "completed", "finished_at": 2.25, "usage": '{"total_tokens": 3}'}),
            RunChange(runs[0], {"status": "cancelled", "finished_at": 3.5, "error": "stopped\x00"}),
            RunChange(runs[2], {"status": "failed", "finished_at": 4.75, "error": None}),
        ],
    )
    await store.write(batch)
    first, second, third = [await store.get_run(r) for r in runs]
    assert (first.status, first.error) == (RunStatus.CANCELLED, "stopped\ufffd")
    assert first.finished_at == _at(3.5)
    assert await store.db.read(_cancel_requested_at, runs[0]) == 1.5
    assert (second.status, second.finished_at, second.usage) == (RunStatus.COMPLETED, _at(2.25), {"total_tokens": 3})
    assert (third.status, third.finished_at, third.error) == (RunStatus.FAILED, _at(4.75), None)
    assert (await store.messages(convs[0]))[1:] == written[:2]
    last = (await store.messages(convs[1]))[1]
    assert last.content == 'line 1\nline "2" \\ \ufffd' and last.id == "msg_b" and last.run_id == runs[1]


def _cancel_requested_at(conn: Connection, run_id: str) -> float:
    value = conn.execute(text("SELECT cancel_requested_at FROM runs WHERE id = :id"), {"id": run_id}).scalar()
    return float(value)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
