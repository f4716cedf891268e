"""Ending a run: one commit that keeps the partial answer, answers every open tool call and records
the terminal event with the run's final status. Cancel, failure, timeout, shutdown and crash
recovery all end runs through `finish`, so history is valid after every terminal state."""

from __future__ import annotations

import json
import time

from onward.core.events import (
    EventData,
    MessageCompleted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunInterrupted,
    ToolCompleted,
)
from onward.core.messages import Message
from onward.core.runs import RunStatus
from onward.engine.state import RunState
from onward.journal import Journal
from onward.store.base import StoredMessage

CANCELLED_TEXT = "Cancelled by the user before it finished. Any output so far was discarded."
INTERRUPTED_TEXT = "Interrupted: the run was stopped ({reason}) before this tool call finished."
FAILED_TEXT = "Not completed: the run failed ({reason}) before this tool call finished."


def _status_of(terminal: EventData) -> RunStatus:
    if isinstance(terminal, RunCompleted):
        return RunStatus.COMPLETED
    if isinstance(terminal, RunCancelled):
        return RunStatus.CANCELLED
    if isinstance(terminal, RunInterrupted):
        return RunStatus.INTERRUPTED
    return RunStatus.FAILED


def open_call_text(terminal: EventData) -> tuple[str, str]:
    """(tool.completed status, tool message content) for a call the run could not finish."""
    if isinstance(terminal, RunCancelled):
        return "cancelled", CANCELLED_TEXT
    if isinstance(terminal, RunInterrupted):
        return "interrupted", INTERRUPTED_TEXT.format(reason=terminal.reason)
    reason = terminal.error if isinstance(terminal, RunFailed) else "unknown"
    return "error", FAILED_TEXT.format(reason=reason)


def closing_steps(
    state: RunState, terminal: EventData
) -> tuple[list[EventData], list[StoredMessage]]:
    """Events and messages that leave the history valid: partial text kept, open calls answered."""
    items: list[EventData] = []
    messages: list[StoredMessage] = []
    conv = state.run.conversation_id
    streaming = state.streaming
    if streaming is not None:
        text = "".join(streaming.text)
        reasoning = "".join(streaming.reasoning) or None
        if text:
            msg = Message(role="assistant", content=text, reasoning=reasoning, id=streaming.message_id,
                          run_id=state.run.id, meta={"partial": True})
            messages.append(StoredMessage(conv, state.take_position(), msg))
        items.append(MessageCompleted(message_id=streaming.message_id, content=text, reasoning=reasoning))
        state.streaming = None
    status, content = open_call_text(terminal)
    for call in list(state.open_calls.values()):
        items.append(ToolCompleted(call_id=call.id, status=status, content=content))
        msg = Message(role="tool", content=content, tool_call_id=call.id, run_id=state.run.id, meta={"status": status})
        messages.append(StoredMessage(conv, state.take_position(), msg))
    state.open_calls.clear()
    items.append(terminal)
    return items, messages


def final_change(state: RunState, terminal: EventData) -> dict[str, object]:
    change: dict[str, object] = {"status": _status_of(terminal).value, "finished_at": time.time()}
    if isinstance(terminal, RunFailed):
        change["error"] = terminal.error
    elif isinstance(terminal, RunInterrupted):
        change["error"] = terminal.reason
    if state.usage:
        change["usage"] = json.dumps(state.usage)
    return change


async def finish(journal: Journal, state: RunState, terminal: EventData) -> None:
    """End an adopted run in one commit and release it from the journal."""
    items, messages = closing_steps(state, terminal)
    await journal.commit(state.run.id, *items, messages=messages, change=final_change(state, terminal))
    journal.release(state.run.id)

