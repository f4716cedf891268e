"""A store with a journal writing through it, a bus, and a user with one conversation: the world
the store, journal and delivery tests (SQLite in tests/unit, Postgres in tests/integration) share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from onward.bus.memory import MemoryBus
from onward.core.events import MessageDelta
from onward.journal import Journal
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
