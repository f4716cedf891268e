"""A run's events as Server-Sent Events, written from the publish itself.

Design decision: once a reader has caught up, its events are written to the connection in the
call that publishes them (`Subscription.listen`), not by the response's task. A task per reader
would wake once per commit, one loop turn after the publish, and under load a turn lasts
milliseconds; so each event waited that long again, and each write cost a task step and a walk
through the stream's generators. The ASGI `send` is started eagerly (`start_eagerly`): it
completes at once unless the connection pushes back, and only then does the response's task
take over and finish it. The task replays, writes heartbeats, re-checks the credential and
notices the disconnect; it never sits between a commit and the reader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Generator, Mapping
from typing import Any, Protocol

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from onward.bus.memory import Wakeup
from onward.core.events import Event, sse_frame
from onward.delivery import Behind, Follower

log = logging.getLogger(__name__)

CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n\n"
REVOKED = b": credentials revoked\n\n"  # a reconnect gets 401 and says why


class Credential(Protocol):
    """What the stream was opened with (api.deps.CredentialCheck): asked again when `due`."""

    @property
    def due(self) -> float: ...

    async def still_valid(self) -> bool: ...


def frames(events: list[Event]) -> bytes:
    return "".join(sse_frame(e) for e in events).encode()


class EventStream(Response):
    """`GET /api/runs/{rid}/stream`: every event after the reader's position, then the end."""

    media_type = "text/event-stream"

    def __init__(
        self, reader: Follower, credential: Credential, heartbeat: float, headers: Mapping[str, str]
    ) -> None:
        self.reader = reader
        self.credential = credential
        self.heartbeat = heartbeat
        self.status_code = 200
        self.background: BackgroundTask | None = None
        self.init_headers(headers)  # no body: no content-length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = _Writer(send)
        hangup = asyncio.ensure_future(_disconnected(receive))
        hangup.add_done_callback(writer.hung_up)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await writer.write_now(CONNECTED)
            await self._follow(writer)
            if not writer.closed:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.reader.close()
            hangup.cancel()

    async def _follow(self, writer: _Writer) -> None:
        reader = self.reader
        while True:
            async for page in reader.catch_up():
                await writer.write_now(frames(page))
                if writer.closed:
                    return
            if reader.ended:
                return
            writer.go_live(reader)  # from here on, the publish writes
            while True:
                await writer.settle(min(self.credential.due, writer.last_write + self.heartbeat))
                if writer.closed or reader.ended:
                    return
                if writer.behind:
                    writer.behind = False
                    break  # catch up again (the subscription overflowed)
                now = time.monotonic()
                if now >= self.credential.due and not await self.credential.still_valid():
                    await writer.write_now(REVOKED)
                    return
                if now - writer.last_write >= self.heartbeat:
                    writer.write(HEARTBEAT)


class _Writer:
    """Writes a reader's frames, eagerly where it can; the response's task finishes the rest."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._reader: Follower | None = None
        self._blocked: Awaitable[None] | None = None  # a write the connection pushed back on
        self._busy = False  # the task is finishing a write: the publish must not write meanwhile
        self._wakeup = Wakeup()  # the task waits here for the publish, the hang-up or a timeout
        self.last_write = time.monotonic()
        self.closed = False  # disconnected, or a write failed
        self.behind = False

    def go_live(self, reader: Follower) -> None:
        self._reader = reader
        reader.listen(self.on_publish)
        self.on_publish()  # what arrived during the replay

    def on_publish(self) -> None:
        """The subscription's listener: runs inside the publish, right after the commit."""
        if self._busy or self._blocked is not None or self.closed or self.behind or self._reader is None:
            return  # the task writes what is buffered once it is done
        try:
            events = self._reader.live()
        except Behind:
            self.behind = True
            self._wakeup.set()
            return
        if events:
            self.write(frames(events))
            if self._reader.ended:
                self._wakeup.set()

    def write(self, body: bytes) -> None:
        """Start writing `body`; if the connection pushes back, the task finishes it."""
        self.last_write = time.monotonic()
        try:
            self._blocked = start_eagerly(self._send({"type": "http.response.body", "body": body, "more_body": True}))
        except Exception:
            log.debug("writing to an event stream failed", exc_info=True)
            self.closed = True
        if self._blocked is not None or self.closed:
            self._wakeup.set()

    async def write_now(self, body: bytes) -> None:
        """Write from the task (replay, the end): wait for the connection if it pushes back."""
        self.write(body)
        await self._finish_blocked()

    async def settle(self, until: float) -> None:
        """Wait until something needs the task, or until `until` (monotonic); finish pushed-back
        writes and write what was published meanwhile. Returns with no write pending."""
        while True:
            if self._blocked is not None:
                await self._finish_blocked()
                self.on_publish()
                continue
            if self.closed or self.behind or (self._reader is not None and self._reader.ended):
                return
            timeout = until - time.monotonic()
            if timeout <= 0:
                return
            await self._wakeup.wait(timeout)

    async def _finish_blocked(self) -> None:
        blocked, self._blocked = self._blocked, None
        if blocked is None:
            return
        self._busy = True
        try:
            await blocked
        except Exception:
            log.debug("writing to an event stream failed", exc_info=True)
            self.closed = True
        finally:
            self._busy = False

    def hung_up(self, _: object) -> None:
        self.closed = True
        self._wakeup.set()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def start_eagerly(awaitable: Awaitable[None]) -> Awaitable[None] | None:
    """Run `awaitable` (a coroutine) now, up to its first suspension: None if it finished, else
    an awaitable that finishes it, for a task to await. What Python 3.12's eager tasks do, for
    one call."""
    steps = awaitable.__await__()
    try:
        suspended_on = steps.send(None)
    except StopIteration:
        return None
    return _Resume(steps, suspended_on)


class _Resume:
    """Awaiting this goes on with a coroutine that was started outside any task and suspended
    on `suspended_on`: the awaiting task waits for that first, as the coroutine's own task would."""

    def __init__(self, steps: Generator[Any, Any, None], suspended_on: Any) -> None:
        self._steps = steps
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, None]:
        steps, value = self._steps, self._suspended_on
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # cancellation: the coroutine cleans up as it would
                try:
                    value = steps.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                value = steps.send(sent)
            except StopIteration:
                return
