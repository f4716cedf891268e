"""validate_history: the one definition of a history a strict chat-completions API accepts."""

from __future__ import annotations

from typing import Any

import pytest

from onward.core.messages import (
    HistoryError,
    Message,
    ToolCall,
    unanswered_tool_calls,
    validate_history,
)

SYSTEM = {"role": "system", "content": "be useful"}
USER = {"role": "user", "content": "hi"}


def call(id: str, name: str = "run_command", arguments: Any = "{}") -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def calling(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def answer(id: str, content: Any = "done") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": id, "content": content}


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([USER], id="one-user-message"),
        pytest.param([SYSTEM, USER, {"role": "assistant", "content": "hello"}, USER], id="plain-chat"),
        pytest.param([SYSTEM, USER, calling(call("a")), answer("a")], id="answered-call"),
        pytest.param([USER, calling(call("a"), call("b")), answer("b"), answer("a")], id="parallel-any-order"),
        pytest.param(
            [USER, calling(call("a"), content="let me look"), answer("a"), {"role": "assistant", "content": "ok"}, USER],
            id="call-then-answer-then-chat",
        ),
        pytest.param([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], id="content-parts"),
    ],
)
def test_accepts_valid_histories(messages: list[dict[str, Any]]) -> None:
    validate_history(messages)


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        pytest.param([], "must not be empty", id="empty"),
        pytest.param(["hi"], "must be an object", id="not-an-object"),
        pytest.param([{"role": "robot", "content": "x"}], "role must be one of", id="bad-role"),
        pytest.param([USER, {"role": "tool", "content": "x"}], "needs a tool_call_id", id="tool-without-id"),
        pytest.param([USER, answer("a")], "does not answer", id="orphan-tool-message"),
        pytest.param([USER, calling(call("a")), answer("b")], "does not answer", id="answers-another-id"),
        pytest.param([USER, calling(call("a")), answer("a"), answer("a")], "does not answer", id="answered-twice"),
        pytest.param([USER, calling(call("a")), USER], "missing ['a']", id="unanswered-then-user"),
        pytest.param(
            [USER, calling(call("a"), call("b")), answer("a"), {"role": "assistant", "content": "x"}],
            "missing ['b']", id="half-answered-then-assistant",
        ),
        pytest.param([USER, calling(call("a"))], "unanswered tool calls", id="unanswered-at-end"),
        pytest.param([USER, {"role": "assistant", "content": None}], "needs content or tool_calls", id="empty-assistant"),
        pytest.param([USER, calling(call("a"), call("a"))], "duplicate id", id="duplicate-call-ids"),
        pytest.param([USER, calling({"type": "function", "function": {"name": "x", "arguments": "{}"}})],
                     "needs an id", id="call-without-id"),
        pytest.param([USER, calling(call("a", name=""))], "needs function.name", id="call-without-name"),
        pytest.param([USER, calling(call("a", arguments={"x": 1}))], "must be a string", id="arguments-not-text"),
        pytest.param([USER, calling(call("a")), answer("a", content=None)], "content must be a string",
                     id="tool-content-not-text"),
        pytest.param([USER, {"role": "assistant", "content": 42}], "string or null", id="assistant-content-type"),
        pytest.param([{"role": "user", "content": None}], "content must be a string", id="user-content-missing"),
        pytest.param([USER, {"role": "assistant", "content": "prefill"}], "must not end with an assistant",
                     id="ends-with-assistant-text"),
    ],
)
def test_rejects_invalid_histories(messages: list[Any], reason: str) -> None:
    with pytest.raises(HistoryError) as caught:
        validate_history(messages)
    assert reason in str(caught.value)


def test_history_error_is_a_value_error() -> None:
    assert issubclass(HistoryError, ValueError)


def test_messages_serialize_to_a_valid_history() -> None:
    tc = ToolCall(id="call_1", name="read_file", arguments='{"path": "a"}')
    messages = [
        Message(role="system", content="sys"),
        Message(role="user", content="read a"),
        Message(role="assistant", content=None, tool_calls=(tc,), reasoning="never sent back"),
        Message(role="tool", content="contents", tool_call_id="call_1"),
        Message(role="assistant", content=None),
        Message(role="user", content="thanks"),
    ]
    wire = [m.to_openai() for m in messages]
    validate_history(wire)
    assert "reasoning" not in wire[2]
    assert wire[4] == {"role": "assistant", "content": ""}
    assert ToolCall.from_openai(wire[2]["tool_calls"][0]) == tc


def test_unanswered_tool_calls() -> None:
    a, b = ToolCall("a", "run_command", "{}"), ToolCall("b", "read_file", "{}")
    history = [Message("user", "go"), Message("assistant", None, (a, b)), Message("tool", "ok", tool_call_id="a")]
    assert unanswered_tool_calls(history) == [b]
    assert unanswered_tool_calls([*history, Message("tool", "ok", tool_call_id="b")]) == []
    assert unanswered_tool_calls([Message("user", "go")]) == []
