"""The in-process runner: each run is an asyncio task supervised until it reaches a terminal state.

The supervisor owns the run's end. The loop runs in an inner task; Stop, the run's time limit and
server shutdown cancel that task (which kills its commands in their `finally`), and the supervisor
then writes the one closing commit. A client connection plays no part in any of this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from onward.activity import Activity
from onward.config import Settings
from onward.core.events import EventData, RunCancelled, RunFailed, RunInterrupted, RunStarted
from onward.core.runs import Run, RunStatus
from onward.engine.finish import finish
from onward.engine.loop import Engine
from onward.engine.state import RunState
from onward.errors import OnwardError
from onward.journal import Journal

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Active:
    run: Run
    task: asyncio.Task[EventData] | None = None
    stop_with: EventData | None = None  # why the run is being stopped, set before cancelling
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)


class LocalRunner:
    def __init__(self, settings: Settings, engine: Engine, journal: Journal, activity: Activity) -> None:
        self.settings = settings
        self.engine = engine
        self.journal = journal
        self.activity = activity
        self.accepting = True
        self._active: dict[str, _Active] = {}
        self._supervisors: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.max_active_runs)

    def active_ids(self) -> list[str]:
        return list(self._active)

    def submit(self, run: Run) -> None:
        """Start executing a queued run (fire and forget; the run's fate is in its events)."""
        entry = _Active(run=run)
        self._active[run.id] = entry
        task = asyncio.create_task(self._supervise(entry), name=f"run-{run.id}")
        self._supervisors.add(task)
        task.add_done_callback(self._supervisors.discard)

    def signal_cancel(self, run_id: str, reason: EventData | None = None) -> bool:
        """Stop a run this process executes. Idempotent; False if it is not here."""
        entry = self._active.get(run_id)
        if entry is None:
            return False
        if entry.stop_with is None:
            entry.stop_with = reason or RunCancelled()
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
        entry.cancel_event.set()
        return True

    async def wait_finished(self, run_id: str, timeout: float) -> bool:
        entry = self._active.get(run_id)
        if entry is None:
            return True
        sups = [t for t in self._supervisors if t.get_name() == f"run-{run_id}"]
        if not sups:
            return True
        done, _ = await asyncio.wait(sups, timeout=timeout)
        return bool(done)

    async def _supervise(self, entry: _Active) -> None:
        run = entry.run
        try:
            # Beyond max_active_runs a run waits here, still `queued`; a stop ends the wait.
            acquired = await self._acquire_slot(entry)
            try:
                await self._execute(entry)
            finally:
                if acquired:
                    self._slots.release()
        except Exception:
            log.exception("run %s: supervisor failed", run.id, extra={"run_id": run.id})
        finally:
            self._active.pop(run.id, None)

    async def _acquire_slot(self, entry: _Active) -> bool:
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        acquire = asyncio.ensure_future(self._slots.acquire())
        stopped = asyncio.ensure_future(entry.cancel_event.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if acquire.done():
            return True
        acquire.cancel()
        try:
            await acquire
        except asyncio.CancelledError:
            return False
        return True  # acquired in the same instant it was cancelled

    async def _execute(self, entry: _Active) -> None:
        run = entry.run
        claimed = await self.journal.transition(
            run.id, run.last_seq, {RunStatus.QUEUED},
            {"status": RunStatus.RUNNING.value, "started_at": time.time()},
            RunStarted(),
        )
        if not claimed:
            return  # cancelled while queued, or taken by someone else
        await self.activity.changed(run.id, run.user_id)
        state = RunState(run=run.evolve(status=RunStatus.RUNNING), next_position=0)
        terminal = entry.stop_with
        if terminal is None:
            entry.task = asyncio.create_task(self.engine.execute(state), name=f"loop-{run.id}")
            terminal = await self._await_loop(entry)
        await finish(self.journal, state, terminal)
        await self.activity.changed(run.id, run.user_id)

    async def _await_loop(self, entry: _Active) -> EventData:
        task = entry.task
        assert task is not None
        done, _ = await asyncio.wait({task}, timeout=self.settings.run_timeout_s)
        if not done:
            entry.stop_with = entry.stop_with or RunFailed(
                error=f"the run took longer than run_timeout_s={self.settings.run_timeout_s:g}", code="timeout"
            )
            task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            if entry.stop_with is None:
                raise  # the supervisor itself is being cancelled
            return entry.stop_with
        except OnwardError as exc:
            return RunFailed(error=exc.message, code=exc.code)
        except Exception as exc:
            log.exception("run %s failed", entry.run.id, extra={"run_id": entry.run.id})
            return RunFailed(error=f"internal error: {type(exc).__name__}: {exc}", code="internal_error")

    async def shutdown(self, grace: float) -> None:
        """Accept no new runs; let running ones go on for `grace` s, then interrupt them."""
        self.accepting = False
        if self._supervisors:
            log.info("waiting up to %.1f s for %d runs", grace, len(self._active))
            await asyncio.wait(set(self._supervisors), timeout=grace)
        for run_id in list(self._active):
            self.signal_cancel(run_id, RunInterrupted(reason="server shutting down"))
        if self._supervisors:
            await asyncio.wait(set(self._supervisors), timeout=10)
