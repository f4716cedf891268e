"""The SSE writer: live events written in the publish itself, a pushed-back write finished by the
stream's task, and `start_eagerly`, the eager start of an ASGI send that makes this possible."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from tests.worlds import World, piece

from onward.api.sse import EventStream, start_eagerly
from onward.core.events import MessageDelta, RunCompleted, RunStarted
from onward.core.runs import RunStatus
from onward.delivery import Follower


class Valid:
    """A credential that stays good (the re-check itself is tested in tests/server)."""

    due = math.inf

    async def still_valid(self) -> bool:
        return True


class Connection:
    """The server's side of one response: records each body and the task that wrote it, and
    pushes back (the client stopped reading) while `open` is clear."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.bodies: list[tuple[bytes, bool, asyncio.Task[Any] | None]] = []
        self.wrote = asyncio.Event()
        self.hang_up = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        if not self.open.is_set():
            await self.open.wait()
        self.bodies.append((message["body"], message["more_body"], asyncio.current_task()))
        self.wrote.set()

    async def receive(self) -> dict[str, Any]:
        await self.hang_up.wait()
        return {"type": "http.disconnect"}

    def seqs(self) -> list[int]:
        text = b"".join(body for body, _, _ in self.bodies).decode()
        return [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]

    async def until(self, seq: int) -> None:
        async with asyncio.timeout(5):
            while not self.seqs() or self.seqs()[-1] < seq:
                self.wrote.clear()
                await self.wrote.wait()


async def _stream(world: World, run_id: str, conn: Connection) -> asyncio.Task[None]:
    stream = EventStream(Follower(world.store, world.bus, run_id, 0, seen_active=True), Valid(), 60, {})
    scope = {"type": "http", "method": "GET", "path": "/"}
    return asyncio.create_task(stream(scope, conn.receive, conn.send))  # type: ignore[arg-type]


async def _reading(world: World) -> tuple[str, Connection, asyncio.Task[None]]:
    """A running run and a stream of it that has replayed run.started: (run id, connection, task)."""
    run = await world.store.create_run(world.user, world.conversation, "hi", None)
    assert await world.journal.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "running"}, RunStarted())
    conn = Connection()
    task = await _stream(world, run.id, conn)
    await conn.until(1)
    return run.id, conn, task


async def test_live_events_are_written_in_the_publish_and_a_pushed_back_write_is_finished_by_the_task(
    world: World,
) -> None:
    rid, conn, task = await _reading(world)  # run.started replayed by the stream's task

    for i in range(3):
        world.journal.record(rid, piece(i))
    await world.journal.flush()
    assert conn.seqs() == [1, 2, 3, 4]  # already written when the commit's waiters wake
    assert conn.bodies[-1][2] is not task  # by the publish, not by the stream's task

    conn.open.clear()  # the client stops reading
    for _ in range(5):
        world.journal.record(rid, MessageDelta(message_id="m", text="x"))  # one event per flush
        await world.journal.flush()
    assert conn.seqs() == [1, 2, 3, 4]
    conn.open.set()
    await conn.until(9)
    world.journal.record(rid, MessageDelta(message_id="m", text="x"))
    await world.journal.commit(rid, RunCompleted(), change={"status": "completed"})
    await asyncio.wait_for(task, 5)
    assert conn.seqs() == list(range(1, 12))
    assert conn.bodies[-1][:2] == (b"", False)  # the response ends after the terminal event


async def test_a_pushed_back_reader_that_falls_too_far_behind_catches_up_from_the_store(world: World) -> None:
    rid, conn, task = await _reading(world)
    conn.open.clear()
    for k in range(3):  # 1,200 events while the connection pushes back: past the 500-event buffer
        for i in range(400):
            world.journal.record(rid, piece(k * 400 + i))
        await world.journal.flush()
    assert not world.bus._subs.get(rid)  # cut from the live feed
    conn.open.set()
    await conn.until(1201)
    await world.journal.commit(rid, RunCompleted(), change={"status": "completed"})
    await asyncio.wait_for(task, 5)
    assert conn.seqs() == list(range(1, 1203))


async def test_a_reader_that_hangs_up_is_unsubscribed(world: World) -> None:
    rid, conn, task = await _reading(world)
    conn.hang_up.set()
    await asyncio.wait_for(task, 5)
    assert not world.bus._subs.get(rid)
    assert conn.bodies[-1][1] is True  # nothing more is sent to a connection that is gone


async def test_start_eagerly_runs_a_coroutine_that_does_not_wait_to_its_end() -> None:
    steps: list[str] = []

    async def quick() -> None:
        steps.append("ran")

    assert start_eagerly(quick()) is None
    assert steps == ["ran"]


async def test_start_eagerly_leaves_the_rest_of_a_waiting_coroutine_to_a_task() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def waits() -> None:
        steps.append("started")
        await gate
        steps.append("finished")

    rest = start_eagerly(waits())
    assert rest is not None and steps == ["started"]
    finishing = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert steps == ["started"]
    gate.set_result(None)
    await asyncio.wait_for(finishing, 1)
    assert steps == ["started", "finished"]


async def test_cancelling_the_task_that_finishes_it_cancels_the_coroutine() -> None:
    steps: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    rest = start_eagerly(waits())
    assert rest is not None
    finishing = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert steps == ["cancelled"]
