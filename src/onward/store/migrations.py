"""Schema migrations: a fresh database gets the current schema and is stamped with the newest
version; an existing one runs, in order and each in its own transaction, the steps it lacks."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    inspect,
    select,
    text,
)
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


def _accounts_tables() -> MetaData:
    """The tables migration 2 creates, frozen as they were then (later steps change them, not this)."""
    md = MetaData()
    Table("users", md, Column("id", String(40), primary_key=True))
    Table(
        "sessions", md,
        Column("id_hash", String(64), primary_key=True),
        Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        Column("csrf_token", String(64), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("last_seen_at", Float, nullable=False),
        Column("expires_at", Float, nullable=False),
        Index("ix_sessions_user", "user_id"),
    )
    Table(
        "api_tokens", md,
        Column("id", String(40), primary_key=True),
        Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        Column("name", String(200), nullable=False),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_at", Float, nullable=False),
        Column("last_used_at", Float),
        Index("ix_api_tokens_user", "user_id"),
    )
    Table(
        "login_tokens", md,
        Column("token_hash", String(64), primary_key=True),
        Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("expires_at", Float, nullable=False),
        Column("used_at", Float),
    )
    return md


async def _accounts(conn: AsyncConnection) -> None:
    """Passwords, admins, disabled users, sessions, API tokens; the core's `local` user becomes `admin`."""
    false = "false" if conn.dialect.name == "postgresql" else "0"
    true = "true" if conn.dialect.name == "postgresql" else "1"
    await conn.execute(text("ALTER TABLE users ADD COLUMN password_hash TEXT"))
    await conn.execute(text(f"ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT {false}"))
    await conn.execute(text(f"ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT {false}"))
    md = _accounts_tables()
    await conn.run_sync(lambda sync: md.create_all(sync, tables=[md.tables[n] for n in ("sessions", "api_tokens", "login_tokens")]))
    taken = (await conn.execute(text("SELECT count(*) FROM users WHERE name = 'admin'"))).scalar_one()
    if taken:
        await conn.execute(text(f"UPDATE users SET is_admin = {true} WHERE name = 'local'"))
    else:
        await conn.execute(text(f"UPDATE users SET name = 'admin', is_admin = {true} WHERE name = 'local'"))


# Append new steps here; never edit one that has shipped.
MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema: users, conversations, messages, runs, run_events", _noop),
    Migration(2, "accounts: passwords, admins, sessions, API tokens; local user becomes admin", _accounts),
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
