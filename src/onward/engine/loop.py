"""The agent loop: LLM call → tool calls → tool results → LLM call, until the model answers.

Every step is queued to the journal before the loop awaits anything else, and the RunState is
updated in the same synchronous stretch. Cancellation can therefore land at any await and whoever
ends the run knows exactly what is committed and which tool calls are still open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onward.config import Settings
from onward.core.events import (
    EventData,
    MessageCompleted,
    MessageDelta,
    MessageStarted,
    ReasoningDelta,
    RunCompleted,
    RunFailed,
    ToolCallDelta,
    ToolCompleted,
    ToolOutput,
    ToolStarted,
)
from onward.core.messages import Message, ToolCall
from onward.engine.state import RunState, StreamingMessage
from onward.ids import new_id
from onward.journal import Journal
from onward.llm.base import Provider, ReasoningChunk, StreamEnd, TextChunk, ToolCallChunk
from onward.store.base import Store, StoredMessage
from onward.tools.base import Sandbox, ToolContext
from onward.tools.output import truncate_middle
from onward.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

YIELD_EVERY = 64  # chunks handled before the loop lets other tasks run

ProviderFactory = Callable[[str | None], tuple[Provider, str]]


@dataclass(slots=True)
class _Call:
    id: str
    name: str
    arguments: list[str]


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        journal: Journal,
        tools: ToolRegistry,
        providers: ProviderFactory,
        sandbox: Sandbox,
    ) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self.tools = tools
        self.providers = providers
        self.sandbox = sandbox

    def workspace(self, user_id: str) -> Path:
        path = self.settings.workspaces_dir / user_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def execute(self, state: RunState) -> EventData:
        """Run the loop; returns the terminal event. Everything before it is already committed."""
        run = state.run
        provider, model = self.providers(run.model)
        history = await self.store.messages(run.conversation_id)
        state.next_position = len(history)
        workspace = self.workspace(run.user_id)
        schemas = self.tools.schemas()
        for _step in range(self.settings.max_steps):
            wire: list[dict[str, Any]] = [{"role": "system", "content": self.settings.system_prompt}]
            wire += [m.to_openai() for m in history]
            assistant = await self._stream(provider, model, wire, schemas, state)
            history.append(assistant)
            if not assistant.tool_calls:
                return RunCompleted(usage=dict(state.usage) or None)
            async with asyncio.TaskGroup() as group:
                for call in assistant.tool_calls:
                    group.create_task(self._run_tool(call, state, workspace, history))
        return RunFailed(
            error=f"the step limit was reached ({self.settings.max_steps} LLM calls); "
            "send another message to continue",
            code="step_limit",
        )

    async def _stream(
        self,
        provider: Provider,
        model: str,
        wire: list[dict[str, Any]],
        schemas: list[dict[str, Any]],
        state: RunState,
    ) -> Message:
        run_id = state.run.id
        journal = self.journal
        message_id = new_id("msg")
        streaming = StreamingMessage(message_id)
        state.streaming = streaming
        journal.record(run_id, MessageStarted(message_id=message_id))
        calls: dict[int, _Call] = {}
        chunks = provider.stream(wire, schemas, model=model)
        try:
            since_yield = 0
            async for chunk in chunks:
                since_yield += 1
                if since_yield >= YIELD_EVERY:
                    # A fast model's chunks are often already buffered, so this loop could run
                    # without ever suspending and starve every other request; let them in.
                    since_yield = 0
                    await asyncio.sleep(0)
                if isinstance(chunk, TextChunk):
                    if chunk.text:
                        streaming.text.append(chunk.text)
                        journal.record(run_id, MessageDelta(message_id=message_id, text=chunk.text))
                elif isinstance(chunk, ReasoningChunk):
                    if chunk.text:
                        streaming.reasoning.append(chunk.text)
                        journal.record(run_id, ReasoningDelta(message_id=message_id, text=chunk.text))
                elif isinstance(chunk, ToolCallChunk):
                    call = calls.get(chunk.index)
                    if call is None:
                        call = calls[chunk.index] = _Call(chunk.id, chunk.name, [])
                    call.arguments.append(chunk.arguments_delta)
                    journal.record(
                        run_id,
                        ToolCallDelta(call_id=call.id, name=call.name, arguments_delta=chunk.arguments_delta),
                    )
                elif isinstance(chunk, StreamEnd):
                    state.add_usage(chunk.usage)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()  # closes the HTTP stream at once, also when the run is cancelled
        tool_calls = tuple(
            ToolCall(id=c.id, name=c.name, arguments="".join(c.arguments)) for _, c in sorted(calls.items())
        )
        text = "".join(streaming.text)
        reasoning = "".join(streaming.reasoning) or None
        message = Message(
            role="assistant",
            content=text or None,
            tool_calls=tool_calls,
            reasoning=reasoning,
            id=message_id,
            run_id=run_id,
        )
        done = journal.enqueue(
            run_id,
            MessageCompleted(
                message_id=message_id,
                content=text,
                tool_calls=[c.to_openai() for c in tool_calls] or None,
                reasoning=reasoning,
            ),
            messages=[StoredMessage(state.run.conversation_id, state.take_position(), message)],
        )
        state.streaming = None
        state.open_calls.update((c.id, c) for c in tool_calls)
        await done
        return message

    async def _run_tool(self, call: ToolCall, state: RunState, workspace: Path, history: list[Message]) -> None:
        run = state.run
        journal = self.journal
        journal.record(run.id, ToolStarted(call_id=call.id, name=call.name, arguments=call.arguments))

        def emit_output(stream: str, text: str) -> None:
            journal.record(run.id, ToolOutput(call_id=call.id, stream=stream, text=text))

        ctx = ToolContext(
            run_id=run.id,
            call_id=call.id,
            user_id=run.user_id,
            workspace=workspace,
            settings=self.settings,
            sandbox=self.sandbox,
            emit_output=emit_output,
        )
        result = await self.tools.invoke(call.name, call.arguments, ctx)
        content = truncate_middle(result.content, self.settings.tool_output_limit)
        message = Message(
            role="tool", content=content, tool_call_id=call.id, run_id=run.id, meta={"status": result.status}
        )
        done = journal.enqueue(
            run.id,
            ToolCompleted(call_id=call.id, status=result.status, content=content),
            messages=[StoredMessage(run.conversation_id, state.take_position(), message)],
        )
        state.open_calls.pop(call.id, None)
        history.append(message)
        await done
