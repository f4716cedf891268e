"""Conversation messages in OpenAI chat format, and the one rule that keeps a history valid.

`validate_history` is as strict as the real chat-completions APIs: every assistant tool call is
answered by exactly one tool message before the next user or assistant message. The engine's
history repair, the scripted LLM server and the tests all use this single definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text exactly as the model wrote it

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> ToolCall:
        fn = data.get("function") or {}
        return cls(id=str(data["id"]), name=str(fn.get("name", "")), arguments=str(fn.get("arguments", "")))


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning: str | None = None  # kept for display; never sent back to the model
    id: str | None = None
    run_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        """The message as the chat-completions API expects it."""
        out: dict[str, Any] = {"role": self.role}
        if self.role == "assistant":
            out["content"] = self.content if self.content else None
            if self.tool_calls:
                out["tool_calls"] = [tc.to_openai() for tc in self.tool_calls]
            elif not self.content:
                out["content"] = ""
        else:
            out["content"] = self.content or ""
        if self.role == "tool":
            out["tool_call_id"] = self.tool_call_id
        return out

    def to_json(self) -> dict[str, Any]:
        """The message as Onward's API shows it."""
        out = self.to_openai()
        out["id"] = self.id
        out["run_id"] = self.run_id
        if self.reasoning:
            out["reasoning"] = self.reasoning
        if self.meta:
            out["meta"] = self.meta
        return out


class HistoryError(ValueError):
    """The message list would be rejected by a strict chat-completions API."""


def validate_history(messages: list[dict[str, Any]]) -> None:
    """Raise HistoryError unless `messages` (OpenAI wire format) is a valid chat history."""
    if not messages:
        raise HistoryError("messages must not be empty")
    pending: list[str] = []  # tool_call ids still waiting for their tool message
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise HistoryError(f"messages[{i}] must be an object")
        role = msg.get("role")
        if role not in ROLES:
            raise HistoryError(f"messages[{i}].role must be one of {sorted(ROLES)}, got {role!r}")
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise HistoryError(f"messages[{i}]: a tool message needs a tool_call_id")
            if call_id not in pending:
                raise HistoryError(
                    f"messages[{i}]: tool message {call_id!r} does not answer a tool call of the "
                    "preceding assistant message"
                )
            pending.remove(call_id)
            if not isinstance(msg.get("content"), str):
                raise HistoryError(f"messages[{i}]: tool message content must be a string")
            continue
        if pending:
            raise HistoryError(
                f"messages[{i}]: an assistant message with tool_calls must be followed by tool "
                f"messages answering each tool_call_id; missing {pending}"
            )
        if role == "assistant":
            calls = msg.get("tool_calls") or []
            content = msg.get("content")
            if content is not None and not isinstance(content, str):
                raise HistoryError(f"messages[{i}]: assistant content must be a string or null")
            if not calls and content is None:
                raise HistoryError(f"messages[{i}]: assistant message needs content or tool_calls")
            seen: set[str] = set()
            for j, call in enumerate(calls):
                call_id = call.get("id") if isinstance(call, dict) else None
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(call_id, str) or not call_id:
                    raise HistoryError(f"messages[{i}].tool_calls[{j}] needs an id")
                if call_id in seen:
                    raise HistoryError(f"messages[{i}].tool_calls[{j}]: duplicate id {call_id!r}")
                if not isinstance(fn, dict) or not fn.get("name"):
                    raise HistoryError(f"messages[{i}].tool_calls[{j}] needs function.name")
                if not isinstance(fn.get("arguments"), str):
                    raise HistoryError(f"messages[{i}].tool_calls[{j}].function.arguments must be a string")
                seen.add(call_id)
            pending = list(seen)
        elif not isinstance(msg.get("content"), (str, list)):
            raise HistoryError(f"messages[{i}]: {role} content must be a string")
    if pending:
        raise HistoryError(f"the last assistant message has unanswered tool calls {pending}")
    if messages[-1].get("role") == "assistant" and not messages[-1].get("tool_calls"):
        # Prefill of the final assistant turn is not part of the contract we rely on.
        raise HistoryError("the history must not end with an assistant message without tool calls")


def unanswered_tool_calls(messages: list[Message]) -> list[ToolCall]:
    """Tool calls of the last assistant message that have no tool message yet."""
    for idx in range(len(messages) - 1, -1, -1):
        msg = messages[idx]
        if msg.role == "assistant":
            answered = {m.tool_call_id for m in messages[idx + 1 :] if m.role == "tool"}
            return [tc for tc in msg.tool_calls if tc.id not in answered]
        if msg.role == "user":
            return []
    return []
