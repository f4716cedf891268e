"""Client processes: hundreds of SSE readers are more than one Python process parses on time.

A job is a top-level function taking one picklable argument and returning a picklable result; it
usually runs an asyncio client until its work is done. Jobs of one batch begin together at a
wall-clock instant (`start_at`), so their timings share one origin. Processes are spawned (never
forked from a process with an event loop) and warmed once, so their start-up costs no job time.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.managers import SyncManager
from queue import Queue
from typing import Any, TypeVar

import uvloop

A = TypeVar("A")
R = TypeVar("R")


def _warm(_: int) -> int:
    import bench.client  # noqa: F401  (import httpx and the reader before any timed job)

    time.sleep(0.2)
    return 0


class ClientPool:
    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._ctx = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(processes, mp_context=self._ctx)
        self._manager: SyncManager | None = None
        list(self._executor.map(_warm, range(processes)))

    @property
    def pids(self) -> list[int]:
        """The client processes (to account for the CPU they use)."""
        return list(getattr(self._executor, "_processes", None) or {})

    def submit(self, fn: Callable[[A], R], args: Sequence[A]) -> list[Future[R]]:
        """Start one job per element of `args` (at most `processes` run at once)."""
        return [self._executor.submit(fn, a) for a in args]

    def run(self, fn: Callable[[A], R], args: Sequence[A]) -> list[R]:
        """Run one job per element of `args` and return their results in order."""
        return [f.result() for f in self.submit(fn, args)]

    def queue(self) -> Queue[Any]:
        """A queue jobs can put to and this process can read (e.g. 'my readers are ready')."""
        if self._manager is None:
            self._manager = self._ctx.Manager()
        q: Queue[Any] = self._manager.Queue()
        return q

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._manager is not None:
            self._manager.shutdown()


def run_async(main: Coroutine[Any, Any, R]) -> R:
    """asyncio.run on uvloop: the load generators' CPU is CPU the server on the same machine lacks
    (with the default loop, 500 SSE readers cost the two client processes ~70 % of a core)."""
    return uvloop.run(main)


def start_time(delay: float = 0.3) -> float:
    """A wall-clock instant shortly ahead, for the jobs of one batch to begin at."""
    return time.time() + delay


def sleep_until(instant: float) -> None:
    remaining = instant - time.time()
    if remaining > 0:
        time.sleep(remaining)


def split(items: Sequence[A], parts: int) -> list[list[A]]:
    """`items` dealt round-robin into at most `parts` non-empty lists."""
    out: list[list[A]] = [list(items[i::parts]) for i in range(min(parts, len(items)))]
    return [p for p in out if p]
