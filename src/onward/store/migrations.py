"""Schema migrations: a fresh database gets the current schema and is stamped with the newest
version; an existing one runs, in order and each in its own transaction, the steps it lacks."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from onward.store.schema import metadata, schema_migrations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[AsyncConnection], Awaitable[None]]


async def _noop(conn: AsyncConnection) -> None:
    return None


# Append new steps here; never edit one that has shipped.
MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema: users, conversations, messages, runs, run_events", _noop),
]

LATEST = MIGRATIONS[-1].version


async def migrate(engine: AsyncEngine) -> int:
    """Bring the database to the newest schema; returns the version it is at."""
    async with engine.begin() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        if "schema_migrations" not in tables:
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                schema_migrations.insert(),
                [{"version": m.version, "description": m.description, "applied_at": time.time()} for m in MIGRATIONS],
            )
            log.info("created database schema at version %d", LATEST)
            return LATEST
        applied = set((await conn.execute(select(schema_migrations.c.version))).scalars())
    for m in MIGRATIONS:
        if m.version in applied:
            continue
        async with engine.begin() as conn:
            await m.apply(conn)
            await conn.execute(
                schema_migrations.insert().values(version=m.version, description=m.description, applied_at=time.time())
            )
        log.info("applied migration %d: %s", m.version, m.description)
    return LATEST
