"""What the scripted LLM plays and checks: turn builders, request validation as strict as the real
APIs, and the rendering of a turn as stream frames or a whole completion. Pure functions; the
server in fake_llm.py only moves bytes."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from onward.core.messages import HistoryError, validate_history

_TURN_KEYS = frozenset({"reasoning", "reasoning_field", "text", "tool_calls", "chunk_chars", "delay_ms",
                        "deltas", "repeat_ids", "omit_ids", "fault", "usage"})
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

class InvalidRequest(ValueError):
    """The request would be rejected by a strict chat-completions API (HTTP 400)."""


class Turn:
    """Builders for turn dicts; plain dicts in the same shape work everywhere."""

    @staticmethod
    def text(text: str, **options: Any) -> dict[str, Any]:
        return {"text": text, **options}

    @staticmethod
    def call(name: str, arguments: str | Mapping[str, Any] = "{}", id: str | None = None) -> dict[str, Any]:
        return {"name": name, "arguments": arguments, **({"id": id} if id else {})}

    @staticmethod
    def tool(name: str, arguments: str | Mapping[str, Any] = "{}", *, id: str | None = None,
             **options: Any) -> dict[str, Any]:
        return {"tool_calls": [Turn.call(name, arguments, id)], **options}

    @staticmethod
    def tools(*calls: Mapping[str, Any], **options: Any) -> dict[str, Any]:
        return {"tool_calls": [dict(c) for c in calls], **options}

    @staticmethod
    def fault(status: int, *, times: int | None = None, retry_after: float | None = None,
              message: str | None = None) -> dict[str, Any]:
        extra = {"times": times, "retry_after": retry_after, "message": message}
        return {"fault": {"status": status, **{k: v for k, v in extra.items() if v is not None}}}

    @staticmethod
    def hang(*, after_chunks: int | None = None, times: int | None = None, **options: Any) -> dict[str, Any]:
        fault: dict[str, Any] = {"hang": True} if after_chunks is None else {"hang_after_chunks": after_chunks}
        return {"fault": {**fault, **({"times": times} if times is not None else {})}, **options}

    @staticmethod
    def drop(after_chunks: int, *, times: int | None = None, **options: Any) -> dict[str, Any]:
        fault = {"drop_after_chunks": after_chunks, **({"times": times} if times is not None else {})}
        return {"fault": fault, **options}


def check_turn(turn: Any, where: str) -> dict[str, Any]:
    if not isinstance(turn, dict):
        raise ValueError(f"{where} must be an object")
    unknown = set(turn) - _TURN_KEYS
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
    for key in ("reasoning", "text"):
        if key in turn and not isinstance(turn[key], str):
            raise ValueError(f"{where}.{key} must be a string")
    for j, call in enumerate(turn.get("tool_calls") or []):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ValueError(f"{where}.tool_calls[{j}] needs a name")
        if not isinstance(call.get("arguments", "{}"), (str, dict)):
            raise ValueError(f"{where}.tool_calls[{j}].arguments must be a string or an object")
    for key, low in (("chunk_chars", 1), ("delay_ms", 0), ("deltas", 0)):
        value = turn.get(key, low)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise ValueError(f"{where}.{key} must be a number >= {low}")
    fault = turn.get("fault")
    kinds = {"status", "hang", "hang_after_chunks", "drop_after_chunks"}
    if fault is not None and not (isinstance(fault, dict) and len(kinds & set(fault)) == 1):
        raise ValueError(f"{where}.fault needs one of {sorted(kinds)}")
    return dict(turn)


def check_request(body: Any) -> None:
    """Raise InvalidRequest unless a strict chat-completions API would accept `body`."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array")
    try:
        validate_history(messages)
    except HistoryError as exc:
        raise InvalidRequest(str(exc)) from exc
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("'stream' must be a boolean")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
    if "tools" not in body or body["tools"] is None:
        return
    tools = body["tools"]
    if not isinstance(tools, list) or not tools:
        raise InvalidRequest("'tools' must be a non-empty array (omit it when there are no tools)")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise InvalidRequest(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidRequest(f"tools[{i}].function.name must match {_TOOL_NAME.pattern}")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            raise InvalidRequest(f"tools[{i}].function.parameters must be a JSON schema object")
        names.add(name)
    for i, msg in enumerate(messages):
        for call in msg.get("tool_calls") or []:
            if call["function"]["name"] not in names:
                raise InvalidRequest(
                    f"messages[{i}] calls tool {call['function']['name']!r}, which is not in 'tools'"
                )


def position(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """(text of the last user message, number of assistant messages after it)."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    content = messages[last].get("content") if last >= 0 else ""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    step = sum(1 for m in messages[last + 1 :] if m.get("role") == "assistant")
    return str(content or ""), step


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def stream_frames(body: dict[str, Any], turn: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """The chunk envelope and the content frames (reasoning, text, tool calls) of one turn."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body["model"]}

    def frame(delta: dict[str, Any]) -> bytes:
        data = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    if turn.get("deltas"):
        return head, [frame({"content": "x"})] * int(turn["deltas"])
    size = int(turn.get("chunk_chars", 8))
    field = turn.get("reasoning_field", "reasoning_content")  # some servers call it "reasoning"
    frames = [frame({field: p}) for p in pieces(turn.get("reasoning", ""), size)]
    frames += [frame({"content": p}) for p in pieces(turn.get("text", ""), size)]
    for index, call in enumerate(turn.get("tool_calls") or []):
        header: dict[str, Any] = {"index": index, "type": "function"}
        if not turn.get("omit_ids"):
            header["id"] = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        name = call["name"]
        frames.append(frame({"tool_calls": [{**header, "function": {"name": name, "arguments": ""}}]}))
        for piece in pieces(arguments(call), size):
            if turn.get("repeat_ids"):
                delta = {**header, "function": {"name": name, "arguments": piece}}
            else:
                delta = {"index": index, "function": {"arguments": piece}}
            frames.append(frame({"tool_calls": [delta]}))
    return head, frames


def arguments(call: Mapping[str, Any]) -> str:
    args = call.get("arguments", "{}")
    return args if isinstance(args, str) else json.dumps(args)


def usage(body: dict[str, Any], pieces: int) -> dict[str, int]:
    prompt = len(json.dumps(body["messages"])) // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": pieces, "total_tokens": prompt + pieces}


def completion(body: dict[str, Any], turn: dict[str, Any]) -> dict[str, Any]:
    text = "x" * int(turn["deltas"]) if turn.get("deltas") else turn.get("text")
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not turn.get("tool_calls") else None}
    if turn.get("reasoning"):
        message["reasoning_content"] = turn["reasoning"]
    calls = turn.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [
            {"id": c.get("id") or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c["name"], "arguments": arguments(c)}}
            for c in calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": turn.get("usage") or usage(body, 1 + len(str(text or "")) // 4),
    }


