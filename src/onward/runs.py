"""The run lifecycle as the API sees it: start a run, cancel it, recover runs after a crash.

Cancel is decided by the database: a queued run is ended by a compare-and-set (queued → cancelled)
that the runner's own claim (queued → running) cannot also win; a running run is marked
`cancelling` durably and then signalled to whoever executes it.
"""

from __future__ import annotations

import logging
import time

from onward.activity import Activity
from onward.config import Settings
from onward.core.events import MessageCompleted, RunCancelled, RunInterrupted
from onward.core.messages import unanswered_tool_calls
from onward.core.runs import ACTIVE_STATUSES, Run, RunStatus
from onward.engine.finish import closing_steps, final_change
from onward.engine.state import RunState, StreamingMessage
from onward.errors import BadRequest, ConfigError, ConversationBusy, Unavailable
from onward.journal import Journal
from onward.runner.local import LocalRunner
from onward.store.base import Store
from onward.tools.processes import kill_orphans

log = logging.getLogger(__name__)


class RunService:
    def __init__(
        self, settings: Settings, store: Store, journal: Journal, runner: LocalRunner, activity: Activity
    ) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self.runner = runner
        self.activity = activity

    async def start(
        self, user_id: str, conversation_id: str, text: str, model: str | None, if_busy: str = "reject"
    ) -> Run:
        if not self.runner.accepting:
            raise Unavailable()
        if not text.strip():
            raise BadRequest("input must not be empty")
        if len(text) > self.settings.max_input_chars:
            raise BadRequest(
                f"input is {len(text)} characters; the limit is max_input_chars={self.settings.max_input_chars}"
            )
        if model is not None:
            try:  # an unknown model is a clear 400 now, not a failed run later
                self.settings.resolve_model(model)
            except ConfigError as exc:
                raise BadRequest(exc.message) from exc
        for _attempt in range(3):
            try:
                run = await self.store.create_run(user_id, conversation_id, text, model)
                break
            except ConversationBusy:
                if if_busy != "interrupt":
                    raise
                active = await self.store.active_run(conversation_id)
                if active is not None:
                    await self.cancel(active)
                    await self.runner.wait_finished(active.id, timeout=10)
        else:
            raise ConversationBusy("the active run did not stop in time; try again")
        self.runner.submit(run)  # before any await: a stored run is never left unsubmitted
        await self.activity.changed(run.id, user_id)
        return run

    async def cancel(self, run: Run) -> tuple[Run, bool]:
        """Cancel `run`; returns the run as it now stands and whether this call changed anything."""
        if run.status.is_terminal:
            return run, False
        if run.status is RunStatus.QUEUED:
            done = await self.journal.transition(
                run.id, run.last_seq, {RunStatus.QUEUED},
                {"status": RunStatus.CANCELLED.value, "finished_at": time.time()},
                RunCancelled(),
            )
            if done:
                self.journal.release(run.id)
                self.runner.signal_cancel(run.id)
                await self.activity.changed(run.id, run.user_id)
                return await self.store.get_run(run.id), True
            run = await self.store.get_run(run.id)
            if run.status.is_terminal:
                return run, False
        changed = await self.store.request_cancel(run.id)
        self.runner.signal_cancel(run.id)
        if changed:
            await self.activity.changed(run.id, run.user_id)
        return await self.store.get_run(run.id), changed

    async def recover(self) -> list[str]:
        """End every run a dead process left active: kill its commands, repair its history."""
        stale = await self.store.runs_with_status(ACTIVE_STATUSES)
        if not stale:
            return []
        killed = kill_orphans({r.id for r in stale})
        if killed:
            log.warning("killed %d orphaned command processes", len(killed))
        for run in stale:
            await self._interrupt(run, "the server stopped while the run was active")
        return [r.id for r in stale]

    async def _interrupt(self, run: Run, reason: str) -> None:
        history = await self.store.messages(run.conversation_id)
        state = RunState(run=run, next_position=len(history))
        state.open_calls = {c.id: c for c in unanswered_tool_calls(history)}
        partial = await self._partial_message(run)
        if partial is not None:
            state.streaming = partial
        terminal = RunInterrupted(reason=reason)
        items, messages = closing_steps(state, terminal)
        ok = await self.journal.transition(
            run.id, run.last_seq, ACTIVE_STATUSES, final_change(state, terminal), *items, messages=messages
        )
        self.journal.release(run.id)
        log.info("run %s interrupted at recovery (%s)", run.id, "ok" if ok else "already ended")

    async def _partial_message(self, run: Run) -> StreamingMessage | None:
        """The assistant message that was streaming when the process died, rebuilt from deltas."""
        events = await self.store.events(run.id, after=0, limit=1_000_000)
        current: StreamingMessage | None = None
        for e in events:
            if e.type == "message.started":
                current = StreamingMessage(e.data["message_id"])
            elif current is not None and e.type == "message.delta":
                current.text.append(e.data["text"])
            elif current is not None and e.type == "reasoning.delta":
                current.reasoning.append(e.data["text"])
            elif e.type == MessageCompleted.type:
                current = None
        return current
