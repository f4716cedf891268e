"""Real Postgres for the store: every test gets a database of its own, created empty and dropped after.

The server comes from ONWARD_TEST_POSTGRES_URL (`make test` and `scripts/services.sh` start the
local one); its database is only where the per-test databases are created from.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from onward.bus.memory import MemoryBus
from onward.store.accounts import AccountStore
from onward.store.sql import SqlStore
from tests.worlds import World, open_world

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _server_url() -> URL:
    return make_url(os.environ.get("ONWARD_TEST_POSTGRES_URL", DEFAULT_URL))


def _dsn(url: URL) -> str:
    """The same URL in the form asyncpg itself accepts."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin() -> asyncpg.Connection:
    url = _server_url()
    try:
        return await asyncpg.connect(_dsn(url), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"Postgres is not reachable at {url.render_as_string(hide_password=True)} ({exc}). "
            "Run ./scripts/services.sh, or set ONWARD_TEST_POSTGRES_URL to a server where this user "
            "may create databases.",
            pytrace=False,
        )


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """The SQLAlchemy URL of a new, empty database, dropped (with any connection left) afterwards."""
    name = f"onward_it_{secrets.token_hex(6)}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _server_url().set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqlStore]:
    s = SqlStore(postgres_url)
    await s.init()
    yield s
    await s.close()


@pytest.fixture
def accounts(store: SqlStore) -> AccountStore:
    return AccountStore(store)


@pytest.fixture
async def world(store: SqlStore) -> AsyncIterator[World]:
    """The store with a journal writing through it and a user with one conversation."""
    async with open_world(store, MemoryBus(), user="ann") as w:
        yield w
