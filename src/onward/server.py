"""`onward serve`: uvicorn with a shutdown that ends runs before it waits for connections, and
an acceptor that takes new connections in bursts.

Uvicorn waits for open connections before it runs the lifespan shutdown, and an SSE stream stays
open until its run ends. So on SIGTERM we first give runs their grace period and interrupt the rest
(which ends every stream with a terminal event), and only then let uvicorn close connections.

libuv (uvloop's core) accepts one connection per turn of the event loop, so that a flood of
connections cannot starve the others. Under load a turn lasts milliseconds, and the server accepted
~20 connections a second: at 500 runs started at once, the readers' streams waited ~2.5 s in the
listen queue while the runs they wanted to read were already streaming. `_Acceptor` watches a
duplicate of each listening socket and accepts up to ACCEPT_BURST connections per turn besides
libuv's one; they are served exactly like the others.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from onward.app import create_app
from onward.config import Settings

log = logging.getLogger(__name__)

# Collect the youngest generation every 10,000 allocations, not 700: a streaming server allocates
# a few objects per event, nearly all short-lived, and each collection also walks every survivor.
# The next generation after 200 such collections, not 20: what survives a young collection here is
# the machinery of runs in progress (~130 objects a run: suspended coroutines, closures, bound
# callbacks), which dies by reference count when its run ends; at 500 runs each collection of that
# generation stopped the loop for 32-75 ms, every few seconds, and found nothing to collect.
GC_THRESHOLD = (10_000, 200, 10)
# Hand the GIL over after 1 ms, not 5, when another thread asks for it. The event loop's thread is
# busy nearly all the time under load, and the SQLite writer thread asks for the GIL several times
# per commit (begin, each statement, commit), waiting up to the interval each time while every run's
# events wait for that commit. Measured at 500 streaming runs (two alternating pairs): event latency
# p50 66-68 -> 51-57 ms, wall ratio and server CPU unchanged within the noise.
SWITCH_INTERVAL_S = 0.001
ACCEPT_BURST = 64  # connections accepted per turn of the event loop, per listening socket
ACCEPT_PAUSE_S = 0.5  # after a failed accept (out of file descriptors): libuv's own accept goes on


class _Acceptor:
    """Accepts waiting connections in bursts from a duplicate of a listening socket."""

    def __init__(self, listener: socket.socket, protocol: Callable[[], asyncio.Protocol]) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = listener.dup()
        self._sock.setblocking(False)
        self._protocol = protocol
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resume: asyncio.TimerHandle | None = None
        self._watch()

    def _watch(self) -> None:
        self._resume = None
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. too many open files: pause, or this would fire every turn
                log.warning("accepting a connection failed (%s); pausing the burst acceptor for %.1f s",
                            exc, ACCEPT_PAUSE_S)
                self._loop.remove_reader(self._sock.fileno())
                self._resume = self._loop.call_later(ACCEPT_PAUSE_S, self._watch)
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvloop's own accept does
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol, conn)
        except Exception as exc:  # e.g. the client left before we got to it
            log.debug("an accepted connection could not be served: %s", exc)
            conn.close()

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        config = self.config

        def protocol() -> asyncio.Protocol:  # as uvicorn's own server makes them
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return made

        self.acceptors = [
            _Acceptor(sock, protocol) for server in self.servers for sock in (server.sockets or ())
        ]
        # Everything built so far (modules, the app, its routes and models) lives as long as the
        # process: out of the collector's sight, so a full collection walks only what came since.
        # Measured at 500 streaming runs: 0.7 s of 4 s of CPU in the collector before, 0.3 s after,
        # and full collections that stopped the loop for ~100 ms each became rare and short.
        gc.collect()
        gc.freeze()

    async def shutdown(self, sockets: Any = None) -> None:
        for acceptor in getattr(self, "acceptors", ()):
            acceptor.close()  # new connections are refused from here on, as uvicorn's are
        # uvicorn wraps the app in middleware; find the FastAPI instance's state underneath
        app, state = self.config.loaded_app, None
        while app is not None and state is None:
            candidate = getattr(app, "state", None)
            state = candidate if getattr(candidate, "runner", None) is not None else None
            app = getattr(app, "app", None)
        if state is not None:
            await state.runner.shutdown(self.settings.shutdown_grace_s)  # runs end: their streams end
            state.activity.close()  # activity feeds never end by themselves
        await super().shutdown(sockets)


def serve(settings: Settings) -> None:
    """Run the server until SIGTERM/SIGINT. Raises OnwardError (a clean CLI message) for a
    configuration that cannot work, before anything starts listening."""
    from onward.tools.sandbox import choose_sandbox

    choose_sandbox(settings).close()  # e.g. sandbox=bwrap without a working bubblewrap
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=5,
        access_log=False,
    )
    gc.set_threshold(*GC_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = _Server(config, settings)
    print(f"Onward {settings.home} — open http://{settings.host}:{settings.port}/", flush=True)
    server.run()  # uvloop and httptools when installed (uvicorn[standard])
