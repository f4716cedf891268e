"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.worlds import World, open_world

from onward.bus.memory import MemoryBus
from onward.store.sql import SqlStore


@pytest.fixture
async def world(tmp_path) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    """A real SQLite file with a journal and a bus whose readers lag after 500 events."""
    store = SqlStore(f"sqlite:///{tmp_path / 'onward.db'}")
    await store.init()
    async with open_world(store, MemoryBus(subscriber_limit=500)) as w:
        yield w
    await store.close()
