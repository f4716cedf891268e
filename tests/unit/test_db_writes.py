"""The SQLite writer groups whatever is queued into one transaction; if anything of the group
fails, each write runs again alone. So each write still succeeds or fails on its own, is written
once, and is reported written only once committed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError, OperationalError

from onward.store.db import GROUP_MAX, Database
from onward.store.statements import execute, fetch_all


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[Database]:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'w.db'}")
    await database.write(_schema)
    yield database
    await database.close()


def _schema(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE items (name TEXT PRIMARY KEY)")
    conn.exec_driver_sql("CREATE TABLE parents (id INTEGER PRIMARY KEY)")
    conn.exec_driver_sql(
        "CREATE TABLE children (parent INTEGER REFERENCES parents(id) DEFERRABLE INITIALLY DEFERRED)"
    )


def _insert(conn: Connection, *names: str) -> int:
    for name in names:
        conn.exec_driver_sql("INSERT INTO items (name) VALUES (?)", (name,))
    return len(names)


def _names(conn: Connection) -> list[str]:
    return [r[0] for r in conn.exec_driver_sql("SELECT name FROM items ORDER BY name")]


def _orphan(conn: Connection) -> None:
    """Valid until the commit: a deferred foreign key is checked there."""
    conn.exec_driver_sql("INSERT INTO children (parent) VALUES (42)")


@asynccontextmanager
async def _writer_busy(db: Database) -> AsyncIterator[None]:
    """Hold the writer thread in a write of its own, so that the writes made inside queue up."""
    loop = asyncio.get_running_loop()
    started, release = asyncio.Event(), threading.Event()

    def hold(_conn: Connection) -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(10)

    holding = asyncio.ensure_future(db.write(hold))
    await started.wait()
    try:
        yield
    finally:
        release.set()
        await holding


def _trace_commits(statements: list[str]) -> Callable[[Connection], None]:
    """A write that makes the writer's connection record its COMMIT statements in `statements`."""

    def install(conn: Connection) -> None:
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("COMMIT") else None)

    return install


async def test_writes_queued_together_commit_together_and_fail_alone(db: Database) -> None:
    # "a" exists when the third write runs: it fails after inserting "z", and only its own rows
    # are undone.
    async with _writer_busy(db):
        writes = [
            asyncio.ensure_future(db.write(_insert, "a")),
            asyncio.ensure_future(db.write(_insert, "b", "c")),
            asyncio.ensure_future(db.write(_insert, "z", "a")),
            asyncio.ensure_future(db.write(_insert, "d")),
        ]
        await asyncio.sleep(0)  # all four are queued
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert results[0] == 1 and results[1] == 2 and results[3] == 1
    assert isinstance(results[2], Exception) and "UNIQUE" in str(results[2])
    assert await db.read(_names) == ["a", "b", "c", "d"]


async def test_a_burst_of_writes_takes_few_transactions(db: Database) -> None:
    commits: list[str] = []
    await db.write(_trace_commits(commits))
    async with _writer_busy(db):
        writes = [asyncio.ensure_future(db.write(_insert, f"n{i:03}")) for i in range(200)]
        await asyncio.sleep(0)
        commits.clear()
    assert await asyncio.gather(*writes) == [1] * 200
    assert len(await db.read(_names)) == 200
    # GROUP_MAX at a time (the holding write changed nothing: no COMMIT)
    assert len(commits) == -(-200 // GROUP_MAX)


async def test_when_the_group_commit_fails_only_the_culprit_fails(db: Database) -> None:
    async with _writer_busy(db):
        writes = [
            asyncio.ensure_future(db.write(_insert, "x")),
            asyncio.ensure_future(db.write(_orphan)),
            asyncio.ensure_future(db.write(_insert, "y")),
        ]
        await asyncio.sleep(0)
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], Exception) and "FOREIGN KEY" in str(results[1])
    assert await db.read(_names) == ["x", "y"]
    assert await db.write(_insert, "after") == 1  # the writer goes on
    assert await db.read(_names) == ["after", "x", "y"]


async def test_a_write_cancelled_while_queued_is_written_all_the_same(db: Database) -> None:
    async with _writer_busy(db):
        first = asyncio.ensure_future(db.write(_insert, "one"))
        second = asyncio.ensure_future(db.write(_insert, "two"))
        await asyncio.sleep(0)
        second.cancel()
    await first
    assert second.cancelled()
    assert await db.read(_names) == ["one", "two"]  # committed together, before `first` resumed


async def test_write_first_goes_ahead_and_groups_stay_short(db: Database) -> None:
    commits: list[str] = []
    await db.write(_trace_commits(commits))
    done: list[str] = []
    async with _writer_busy(db):
        writes = [asyncio.ensure_future(db.write(_insert, f"n{i:03}")) for i in range(GROUP_MAX + 10)]
        urgent = asyncio.ensure_future(db.write_first(_insert, "urgent"))
        def settled(name: str) -> Callable[[asyncio.Future[int]], None]:
            return lambda _fut: done.append(name)

        for name, fut in [*((f"n{i:03}", w) for i, w in enumerate(writes)), ("urgent", urgent)]:
            fut.add_done_callback(settled(name))
        await asyncio.sleep(0)
        commits.clear()
    await asyncio.gather(urgent, *writes)
    assert done.index("urgent") < done.index("n000")  # ahead of every other write, in a transaction alone
    assert len(commits) == 3  # the urgent write, then GROUP_MAX writes, then the last 10


async def test_the_journals_writes_and_the_others_take_turns(db: Database) -> None:
    """A stream of `write_first` writes cannot keep the others waiting, nor the others it: when
    both are queued, one transaction of each in turn."""
    loop = asyncio.get_running_loop()
    in_group, release = asyncio.Event(), threading.Event()
    order: list[str] = []

    def hold(conn: Connection) -> int:  # the first write of the first group of others
        loop.call_soon_threadsafe(in_group.set)
        release.wait(10)
        return _insert(conn, "hold")

    def named(fut: asyncio.Future[int], name: str) -> asyncio.Future[int]:
        fut.add_done_callback(lambda _f: order.append(name))
        return fut

    async with _writer_busy(db):
        first_a = named(asyncio.ensure_future(db.write_first(_insert, "a")), "a")
        others = [named(asyncio.ensure_future(db.write(hold)), "n000")]
        others += [named(asyncio.ensure_future(db.write(_insert, f"n{i:03}")), f"n{i:03}") for i in range(1, 80)]
        await asyncio.sleep(0)
    try:
        await in_group.wait()  # the first group of others is under way ...
        assert first_a.done()  # ... and "a" was committed before it, in a transaction of its own
        first_b = named(asyncio.ensure_future(db.write_first(_insert, "b")), "b")
        await asyncio.sleep(0)
    finally:
        release.set()
    await asyncio.gather(first_a, first_b, *others)
    assert order.index("a") < order.index("n000")
    assert order.index(f"n{GROUP_MAX - 1:03}") < order.index("b") < order.index(f"n{GROUP_MAX:03}")


async def test_without_wal_every_read_goes_to_a_thread_and_still_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLite's dotfile-locking VFS has no shared memory, so it refuses WAL mode (as some network
    # filesystems do): a read could then wait for the writer, and must not do so on the loop.
    with caplog.at_level("WARNING", logger="onward.store.db"):
        database = Database(f"sqlite:///file:{tmp_path / 'sub' / 'd.db'}?vfs=unix-dotfile&uri=true")
    try:
        assert "could not use WAL mode" in caplog.text
        assert not database._read_inline
        await database.write(_schema)
        assert await asyncio.gather(*(database.write(_insert, f"r{i}") for i in range(20))) == [1] * 20
        loop_thread = threading.get_ident()

        def names_and_thread(conn: Connection) -> tuple[list[str], int]:
            return _names(conn), threading.get_ident()

        names, thread = await database.read(names_and_thread)
        assert names == sorted(f"r{i}" for i in range(20)) and thread != loop_thread
    finally:
        await database.close()


async def test_a_hot_statement_on_the_driver_fails_as_through_sqlalchemy(db: Database) -> None:
    insert = text("INSERT INTO items (name) VALUES (:name)")
    await db.write(lambda conn: execute(conn, insert, {"name": "once"}))
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await db.write(lambda conn: execute(conn, insert, {"name": "once"}))
    with pytest.raises(OperationalError, match="no such table"):
        await db.read(lambda conn: fetch_all(conn, text("SELECT * FROM nowhere")))


async def test_a_write_soon_outcome_is_ready_before_the_loop_gets_to_it(db: Database) -> None:
    """The writer thread marks the outcome before it schedules the call on the loop, so the
    loop's code can deliver it at once; delivered once, whichever comes first."""
    reported: list[BaseException | None] = []
    outcome = db.write_soon(reported.append, _insert, "soon")
    deadline = time.monotonic() + 10
    while not outcome.ready and time.monotonic() < deadline:
        time.sleep(0.001)  # noqa: ASYNC251  # holding the loop is the point: only the writer moves
    assert outcome.ready and reported == []
    outcome.deliver()
    assert reported == [None]
    assert await db.read(_names) == ["soon"]  # delivered after the commit
    await db.write(_insert, "after")  # the writer's scheduled call for "soon" has run by now
    assert reported == [None]


async def test_a_write_soon_failure_arrives_as_its_error(db: Database) -> None:
    await db.write(_insert, "taken")
    reported: list[BaseException | None] = []
    outcome = db.write_soon(reported.append, _insert, "taken")
    await db.write(_insert, "after")  # settled in order: the failed write's call has run
    assert outcome.ready and len(reported) == 1 and isinstance(reported[0], IntegrityError)
