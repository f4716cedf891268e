"""Schema migrations: a fresh database gets the current schema and is stamped with the newest
version; an existing one runs, in order and each in its own transaction, the steps it lacks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Connection,
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

from onward.store.db import Database
from onward.store.schema import metadata, schema_migrations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _noop(conn: Connection) -> None:
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


def _accounts(conn: Connection) -> None:
    """Passwords, admins, disabled users, sessions, API tokens; the core's `local` user becomes `admin`."""
    false = "false" if conn.dialect.name == "postgresql" else "0"
    true = "true" if conn.dialect.name == "postgresql" else "1"
    conn.execute(text("ALTER TABLE users ADD COLUMN password_hash TEXT"))
    conn.execute(text(f"ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT {false}"))
    conn.execute(text(f"ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT {false}"))
    md = _accounts_tables()
    md.create_all(conn, tables=[md.tables[n] for n in ("sessions", "api_tokens", "login_tokens")])
    taken = conn.execute(text("SELECT count(*) FROM users WHERE name = 'admin'")).scalar_one()
    if taken:
        conn.execute(text(f"UPDATE users SET is_admin = {true} WHERE name = 'local'"))
    else:
        conn.execute(text(f"UPDATE users SET name = 'admin', is_admin = {true} WHERE name = 'local'"))


# Append new steps here; never edit one that has shipped.
MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema: users, conversations, messages, runs, run_events", _noop),
    Migration(2, "accounts: passwords, admins, sessions, API tokens; local user becomes admin", _accounts),
]

LATEST = MIGRATIONS[-1].version


async def migrate(db: Database) -> int:
    """Bring the database to the newest schema; returns the version it is at."""
    applied = await db.write(_create_or_read)
    if applied is None:
        log.info("created database schema at version %d", LATEST)
        return LATEST
    for m in MIGRATIONS:
        if m.version in applied:
            continue
        await db.write(_apply, m)
        log.info("applied migration %d: %s", m.version, m.description)
    return LATEST


def _create_or_read(conn: Connection) -> set[int] | None:
    """A fresh database gets the whole schema, stamped (None); otherwise the versions applied."""
    if "schema_migrations" not in set(inspect(conn).get_table_names()):
        metadata.create_all(conn)
        conn.execute(
            schema_migrations.insert(),
            [{"version": m.version, "description": m.description, "applied_at": time.time()} for m in MIGRATIONS],
        )
        return None
    return set(conn.execute(select(schema_migrations.c.version)).scalars())


def _apply(conn: Connection, m: Migration) -> None:
    m.apply(conn)
    conn.execute(schema_migrations.insert().values(version=m.version, description=m.description, applied_at=time.time()))
