"""Where store operations execute: each is one synchronous function over a SQLAlchemy Connection,
run in one hop (SQLite reads: in the call).

Design decision: SQLite goes through the standard library's `sqlite3` (a sync engine). Every write
runs on one dedicated thread (SQLite has one writer; writes queue there, in order, instead of on a
lock). Reads run on the event loop's own thread, in the call: in WAL mode a read never waits for the
writer and a lookup takes microseconds, while the hop to a thread and back cost more than the read —
two thread wake-ups and a contest for the GIL each time `sqlite3` released it (strace counted ~400
futex calls per run start; 500 run starts took 4.1 → 3.7 ms of CPU each without the hop). A read
still ends by yielding to the loop once, so that `await store.…` stays a suspension point as it
reads: a loop of reads cannot starve other tasks (a yield costs a few µs; measured, no loss). Reads
that may return a great many rows (`scan`: recovery) still go to a reader thread.
Through an async driver each statement, fetch and commit was a hop of its own, and under load every
hop waits a full event-loop iteration: a group commit took hundreds of milliseconds at 200 runs.
Postgres keeps the async engine (asyncpg); the same functions run through `run_sync`.

Writes are grouped: whatever is queued when the writer thread takes its next turn runs as one
transaction (if a write raises, or the commit fails, the group is rolled back and each write runs
again alone, so it fails alone). A write is still committed before its caller resumes. One
transaction per turn instead of one per write: in a burst of 500 run starts the writer ran ~1,100
transactions (run creations, claims, the journal's group commits), each waiting for the GIL several
times, and the journal's commits queued behind them for ~0.5 s. The journal's commits
(`write_first`) are transactions of their own, taking turns with groups of at most GROUP_MAX other
writes: the events of runs in progress wait for one group of other writes at most, and other
writes still get every other turn. Only the journal's commits go first: the claims of a burst of
run starts, riding with them, made one transaction of ~130 writes, and a group of 64 run creations
took 10-50 ms of a loaded writer, which the events of every run in progress waited for (see
GROUP_MAX). (Carrying 64 run creations in the journal's transaction held every run's events for
tens of ms during a burst of run starts.)

The loop's reads and the writer's transactions each keep one connection open for good (`_Held`):
a checkout from SQLAlchemy's pool and its return cost ~40 µs, more than the statement they serve
once the hot statements run on the driver (store/statements.py).

Checkpoints (copying the WAL back into the database file, with an fsync) run on a thread of their
own, at most every CHECKPOINT_INTERVAL_S after writes, never inside a commit: SQLite's automatic
checkpoint ran in whichever commit crossed 1,000 pages and stalled the writer — and every run's
events behind it — for hundreds of milliseconds. SQLite starts the WAL over only when a write begins
with every frame copied back, and under steady load the writer always appended more while the
checkpoint ran: at 500 streaming runs the WAL grew by ~100 MB a second and never shrank while they
went on. So once the WAL is long (CATCH_UP_FRAMES), the writer itself copies back what came during
the checkpoint (a commit or two) at its first idle moment, and the next write starts the WAL over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from onward.store.base import WriteOutcome

P = ParamSpec("P")
T = TypeVar("T")

Operation = Callable[Concatenate[Connection, P], T]
Settle = Callable[[bool, Any], None]  # a queued write's outcome: (True, result) or (False, exception)
# (the write, the loop to settle it on, how: on that loop, and on the writer thread first, if given)
_Queued = tuple[Callable[[Connection], Any], asyncio.AbstractEventLoop, Settle, Settle | None]

READ_THREADS = 2  # for `scan` only
# Writes per transaction besides the journal's commits: a turn of the writer is short. In a burst
# of 500 run starts on 2 busy cores a run creation took 0.2-0.75 ms of the writer (39 µs when
# idle), so a group of 64 held the journal's next commit for up to ~50 ms. Measured at 500
# streaming runs, claims queued with the other writes (two alternating pairs): event latency p99 in
# the first quarter second 78-101 -> 39-46 ms, over the run 66-76 -> 52-61 ms.
GROUP_MAX = 16
# A checkpoint fsyncs what the WAL took since the last one: at 500 streaming runs ~25 MB a quarter
# second. Once a second, each took 14-77 ms of the other core and of the disk, and the loop stalled
# with it (its turns 40-85 ms); a quarter of that, 9-10 ms at the median. Five alternating pairs of
# six rounds at 500 runs, median p99 per round: 56.6, 63.3, 77.2, 61.5, 54.3 ms at 1 s against
# 45.5, 41.4, 46.9, 47.0, 49.1 at 0.25 s (0.1 s: no better than 0.25).
CHECKPOINT_INTERVAL_S = 0.25
CATCH_UP_WAIT_S = 1.0  # most the end of a checkpoint waits for the writer to be idle
# The writer ends a checkpoint only for a WAL at least this long: a shorter one starts over on its
# own once writes pause. Ending it stops the writer for 1-17 ms (two fsyncs), and every run's events
# wait for that: at 500 streaming runs a 64 MB threshold did so every second, and the pause was a
# round's worst latency more than once; at 256 MB it comes every ~3 s.
CATCH_UP_FRAMES = 65_536  # 256 MB in 4 KB pages
CHECKPOINT_GIVE_UP = 10  # failures in a row before the writer checkpoints by itself again
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is cut back to this after a checkpoint
WRITER_CACHE_KB = 32 * 1024  # the writer connection's page cache

log = logging.getLogger(__name__)


class Database:
    """Runs store operations: `read` on a connection, `write` inside a transaction."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._async: AsyncEngine | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # `write_soon`'s writes under way (Postgres)
        if self.is_sqlite:
            # Whatever driver the URL names (the default used to be aiosqlite), SQLite runs on sqlite3.
            parsed = parsed.set(drivername="sqlite")
            if parsed.database and parsed.database != ":memory:":
                # a URI filename (`sqlite:///file:PATH?…&uri=true`) names its path after "file:"
                path = parsed.database.removeprefix("file:") if parsed.query.get("uri") else parsed.database
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            args = {"timeout": 30, "check_same_thread": False}
            self._writer = create_engine(parsed, connect_args=args, pool_size=1, max_overflow=0)
            self._reader = create_engine(parsed, connect_args=args, pool_size=READ_THREADS, max_overflow=0)
            self._checkpointer = create_engine(parsed, connect_args=args, pool_size=1, max_overflow=0)
            self._inline = create_engine(parsed, connect_args=args, pool_size=1, max_overflow=0)  # `read`
            self._held_inline = _Held(self._inline)
            self._held_writer = _Held(self._writer)
            for engine in (self._writer, self._reader, self._checkpointer, self._inline):
                event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(self._writer, "connect", _writer_pragmas)
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="onward-db-write")
            self._queued: list[_Queued] = []
            self._queued_first: list[_Queued] = []
            self._queue_lock = threading.Lock()
            self._writer_busy = False  # a turn of the writer thread is submitted or under way
            self._first_went_last = False  # the last transaction was of `write_first` writes
            self._read_threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="onward-db-read")
            self._checkpoint_thread = ThreadPoolExecutor(1, thread_name_prefix="onward-db-checkpoint")
            self.checkpoint_interval = CHECKPOINT_INTERVAL_S
            self.catch_up_frames = CATCH_UP_FRAMES
            self.last_checkpoint: tuple[int, int, int] | None = None  # (busy, WAL frames, frames copied)
            self._checkpoint_at = time.monotonic()
            self._checkpointing: concurrent.futures.Future[None] | None = None
            self._checkpoint_failures = 0
            # A checkpoint that copied back most of the WAL, for the writer to end: since when
            # (monotonic), and what the checkpoint thread waits on meanwhile.
            self._catch_up: tuple[float, threading.Event] | None = None
            self.dialect = self._writer.dialect
            # Only a read in WAL mode never waits for the writer: without it (a filesystem with no
            # shared memory) a read could sleep in SQLite's busy handler, so it goes to a thread.
            with self._inline.connect() as conn:
                self._read_inline = conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        else:
            self._async = create_async_engine(parsed, pool_size=10, max_overflow=20)
            self.dialect = self._async.dialect
        self.paramstyle: str = self.dialect.paramstyle

    async def read(self, op: Operation[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read of bounded size; SQLite: here, on the calling thread (see the module's note)."""
        if self._async is not None:
            async with self._async.connect() as conn:
                return await conn.run_sync(op, *args, **kwargs)
        if not self._read_inline:
            return await self.scan(op, *args, **kwargs)
        result = self._held_inline.read(op, *args, **kwargs)
        # Still a suspension point, as an `await` reads: a loop of reads never starves the others.
        await asyncio.sleep(0)
        return result

    async def scan(self, op: Operation[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read that may return a great many rows; SQLite: on a reader thread, so that the
        event loop is not held while SQLite reads."""
        if self._async is not None:
            return await self.read(op, *args, **kwargs)
        call = functools.partial(_on_connection, self._reader, op, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._read_threads, call)

    async def write(self, op: Operation[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op` in a transaction: committed if it returns, rolled back if it raises."""
        return await self._write(False, op, *args, **kwargs)

    async def write_first(self, op: Operation[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`write`, ahead of every write queued by `write` (SQLite): for the journal's commits, so
        that the events of runs in progress never wait behind a burst of new work."""
        return await self._write(True, op, *args, **kwargs)

    async def _write(self, first: bool, op: Operation[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._async is not None:
            async with self._async.begin() as conn:
                return await conn.run_sync(op, *args, **kwargs)
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue(first, lambda conn: op(conn, *args, **kwargs), functools.partial(_settle_future, done), None)
        result = await done
        self._maybe_checkpoint()
        return result

    def write_soon(
        self, done: Callable[[BaseException | None], None], op: Operation[P, Any], *args: P.args, **kwargs: P.kwargs
    ) -> WriteOutcome:
        """`write_first` with a callback: `done(None)` once committed, `done(error)` if not.

        `done` runs on the calling loop in the turn the writer's outcome arrives there, where a
        future would resume the task awaiting it one turn later: under load a turn of the loop
        lasts milliseconds, and the journal's commits are what every event waits for. Sooner if
        the loop's code delivers the returned outcome once it is ready: the writer thread marks
        it so (SQLite) before it schedules the call.
        """
        outcome = WriteOutcome(done)
        if self._async is not None:
            task = asyncio.ensure_future(self.write_first(op, *args, **kwargs))
            self._tasks.add(task)  # the loop keeps only a weak reference to a task

            def finished(t: asyncio.Task[Any]) -> None:
                self._tasks.discard(t)
                outcome.arrive(asyncio.CancelledError() if t.cancelled() else t.exception())
                outcome.deliver()

            task.add_done_callback(finished)
            return outcome

        def arrive(ok: bool, value: Any) -> None:  # on the writer thread
            outcome.arrive(None if ok else value)

        def settle(ok: bool, value: Any) -> None:
            self._maybe_checkpoint()
            outcome.deliver()

        self._queue(True, lambda conn: op(conn, *args, **kwargs), settle, arrive)
        return outcome

    def _queue(self, first: bool, call: Callable[[Connection], Any], settle: Settle, arrive: Settle | None) -> None:
        item = (call, asyncio.get_running_loop(), settle, arrive)
        self._hand_to_writer(lambda: (self._queued_first if first else self._queued).append(item))

    def _hand_to_writer(self, put: Callable[[], None]) -> None:
        """`put` something where the writer thread looks (under the queue's lock), and start the
        writer's turn if it is idle. RuntimeError once the database is closing."""
        with self._queue_lock:
            put()
            start = not self._writer_busy
            self._writer_busy = True
        if start:
            self._write_thread.submit(self._write_queued)

    def _maybe_checkpoint(self) -> None:
        if time.monotonic() - self._checkpoint_at >= self.checkpoint_interval:
            self._start_checkpoint()

    def _write_queued(self) -> None:
        """The writer thread's turn: what is queued, one transaction at a time, until none is.
        A transaction takes every `write_first` write, or at most GROUP_MAX others; while both
        kinds are queued, they take turns. The end of a checkpoint waits for a turn with nothing
        queued, or CATCH_UP_WAIT_S at most."""
        while True:
            with self._queue_lock:
                catch_up = self._catch_up
                if catch_up is not None and time.monotonic() - catch_up[0] >= CATCH_UP_WAIT_S:
                    queued = []
                elif self._queued_first and not (self._queued and self._first_went_last):
                    queued, self._queued_first = self._queued_first, []
                    self._first_went_last = True
                else:
                    queued = self._queued[:GROUP_MAX]
                    self._queued = self._queued[GROUP_MAX:]
                    self._first_went_last = False
                if not queued:
                    if catch_up is None:
                        self._writer_busy = False
                        return
                    self._catch_up = None
            if not queued:  # end the last checkpoint (see the module's note)
                assert catch_up is not None
                self._finish_checkpoint()
                catch_up[1].set()
                continue
            try:
                outcomes = self._held_writer.write_group([call for call, _, _, _ in queued])
            except BaseException as exc:  # not an Exception (those are outcomes): fail the group, go on
                outcomes = [(False, exc)] * len(queued)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Settle, tuple[bool, Any]]]] = {}
            for (_, loop, settle, arrive), outcome in zip(queued, outcomes, strict=True):
                if arrive is not None:
                    arrive(*outcome)  # the loop's code may take it before the call below reaches it
                by_loop.setdefault(loop, []).append((settle, outcome))
            for loop, settled in by_loop.items():  # one loop, except in tests that use several
                try:
                    loop.call_soon_threadsafe(_settle, settled)
                except RuntimeError:  # that loop is closed: nobody is waiting any more
                    pass

    def _start_checkpoint(self) -> None:
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._checkpoint_at = time.monotonic()
        self._checkpointing = self._checkpoint_thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, waiting for nobody (PASSIVE)."""
        try:
            with self._checkpointer.connect() as conn:
                self.last_checkpoint = busy, frames, _ = _wal_checkpoint(conn)
            self._checkpoint_failures = 0
        except Exception:
            self._checkpoint_failures += 1
            if self._checkpoint_failures == 1:
                log.exception("WAL checkpoint failed; the next write tries again")
            if self._checkpoint_failures == CHECKPOINT_GIVE_UP:
                # Never let the WAL grow without bound: SQLite checkpoints in its commits again.
                log.error("WAL checkpoints keep failing; the writer checkpoints on its own again")
                self._write_thread.submit(self._held_writer.read, _restore_autocheckpoint)
            return
        if busy or frames < self.catch_up_frames:  # (frames: those the checkpoint found; more came since)
            return
        # The writer ends it, at once if it is idle; the next checkpoint waits for that.
        ended = threading.Event()

        def put() -> None:
            self._catch_up = (time.monotonic(), ended)

        try:
            self._hand_to_writer(put)
        except RuntimeError:  # the database is closing
            return
        ended.wait(CATCH_UP_WAIT_S + 30)  # the writer's turn, however long its transaction was

    def _finish_checkpoint(self) -> None:
        """On the writer thread, between transactions: copy back the frames appended while the
        checkpoint ran. With nothing left to copy, the next write starts the WAL over."""
        try:
            self.last_checkpoint = self._held_writer.read(_wal_checkpoint)
        except Exception:  # the checkpoint thread's next turn tries again, and says why if it fails
            log.debug("the writer's checkpoint failed", exc_info=True)

    async def checkpoint(self) -> tuple[int, int, int] | None:
        """Run a checkpoint now (SQLite) and return its (busy, WAL frames, frames copied)."""
        if not self.is_sqlite:
            return None
        if self._checkpointing is not None and not self._checkpointing.done():
            await asyncio.wrap_future(self._checkpointing)  # it may have begun before the last write
        self._start_checkpoint()
        assert self._checkpointing is not None
        await asyncio.wrap_future(self._checkpointing)
        return self.last_checkpoint

    async def close(self) -> None:
        if self._async is not None:
            await self._async.dispose()
            return
        loop = asyncio.get_running_loop()
        for pool in (self._write_thread, self._read_threads, self._checkpoint_thread):
            await loop.run_in_executor(None, pool.shutdown)
        self._held_writer.close()
        self._held_inline.close()
        self._writer.dispose()
        self._reader.dispose()
        self._inline.dispose()
        self._checkpointer.dispose()


class _Held:
    """One connection of `engine`, opened on first use and kept, for the one thread that uses it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._engine.connect()
        return self._conn

    def read(self, op: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        conn = self._connection()
        try:
            return op(conn, *args, **kwargs)
        finally:
            if conn.in_transaction():  # what SQLAlchemy began for a statement of its own
                conn.rollback()

    def write_group(self, calls: list[Callable[[Connection], Any]]) -> list[tuple[bool, Any]]:
        """Run `calls` in one transaction: (True, result) or (False, exception) for each.

        Optimistic: a write that raises is rare (a busy conversation, a lost compare-and-set), so
        the group runs without savepoints, which would cost two statements per write, and each
        statement a contest for the GIL. If anything fails, the commit included, nothing of the
        group is kept and each write runs again in a transaction of its own: a write must be a
        function of the connection alone, since it may run twice.
        """
        if len(calls) > 1:
            conn = self._connection()
            try:
                with conn.begin():  # committed at the end, rolled back if anything raises
                    return [(True, call(conn)) for call in calls]
            except Exception:
                self._discard()
        return [self._write_alone(call) for call in calls]

    def _write_alone(self, call: Callable[[Connection], Any]) -> tuple[bool, Any]:
        conn = self._connection()
        try:
            with conn.begin():
                return True, call(conn)
        except Exception as exc:
            self._discard()
            return False, exc

    def _discard(self) -> None:
        """After a failure: a failed COMMIT (a deferred constraint, a full disk) can leave the
        transaction open, so the next write starts on the connection as the pool resets it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()  # the pool rolls back what is open

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _settle(settled: list[tuple[Settle, tuple[bool, Any]]]) -> None:
    for settle, (ok, value) in settled:
        try:
            settle(ok, value)
        except Exception:  # one caller's callback must not keep the others' outcomes from them
            log.exception("a write's completion callback failed")


def _settle_future(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller was cancelled; its write happened (or failed) all the same
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _on_connection(engine: Engine, op: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with engine.connect() as conn:
        return op(conn, *args, **kwargs)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode not in ("wal", "memory"):
        # e.g. a network filesystem without shared memory: readers then wait for every commit
        log.warning("SQLite could not use WAL mode (journal_mode=%s): reads will wait for writes", mode)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _wal_checkpoint(conn: Connection) -> tuple[int, int, int]:
    """A PASSIVE checkpoint: (1 if it was blocked, frames in the WAL, frames copied back)."""
    busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return int(busy), int(frames), int(copied)


def _restore_autocheckpoint(conn: Connection) -> None:
    conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")


def _writer_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=0")  # Database._checkpoint does it, off the write path
    # The events' index takes each commit's rows at 500 places at once (one per streaming run):
    # with SQLite's default 2 MB of cache those pages kept being read back (≈30 % more CPU per
    # event once the table held ~100,000 events). Pages are allocated as used, up to this.
    cur.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KB}")
    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cur.close()
