"""OpenAICompatProvider against the scripted server over real HTTP: streaming, quirks, retries, faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from onward.config import ModelConfig, Settings
from onward.errors import LLMError
from onward.llm.base import ReasoningChunk, StreamChunk, StreamEnd, TextChunk, ToolCallChunk
from onward.llm.openai_compat import OpenAICompatProvider, ToolCallAccumulator
from onward.testing import ScriptedLLM, Turn

USER = [{"role": "user", "content": "hello"}]
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("run_command", "read_file")
]

MakeProvider = Callable[..., OpenAICompatProvider]


@pytest.fixture
async def make_provider(scripted_llm: ScriptedLLM) -> AsyncIterator[MakeProvider]:
    made: list[OpenAICompatProvider] = []

    def make(**overrides: Any) -> OpenAICompatProvider:
        options: dict[str, Any] = {
            "connect_timeout_s": 2.0,
            "read_timeout_s": 5.0,
            "max_retries": 3,
            "retry_base_s": 0.01,
        }
        options.update(overrides)
        base_url = options.pop("base_url", scripted_llm.base_url)
        provider = OpenAICompatProvider(base_url, None, **options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def collect(
    provider: OpenAICompatProvider,
    messages: list[dict[str, Any]] = USER,
    tools: list[dict[str, Any]] | None = None,
) -> list[StreamChunk]:
    return [chunk async for chunk in provider.stream(messages, tools or [], model="test-model")]


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextChunk))


async def test_streams_text_and_usage(scripted_llm: ScriptedLLM, make_provider: MakeProvider) -> None:
    scripted_llm.script([Turn.text("Hello, world! How are you today?", chunk_chars=5)])
    chunks = await collect(make_provider())
    assert text_of(chunks) == "Hello, world! How are you today?"
    assert len([c for c in chunks if isinstance(c, TextChunk)]) == 7
    end = chunks[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert end.usage["total_tokens"] > 0
    (request,) = scripted_llm.requests
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["model"] == "test-model"
    assert "tools" not in request  # an empty tool list is never sent


async def test_tools_are_sent_when_present(scripted_llm: ScriptedLLM, make_provider: MakeProvider) -> None:
    await collect(make_provider(), tools=TOOLS)
    assert scripted_llm.requests[0]["tools"] == TOOLS


async def test_usage_of_the_turn_is_passed_through(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}
    scripted_llm.script([Turn.text("hi", usage=usage)])
    end = (await collect(make_provider()))[-1]
    assert isinstance(end, StreamEnd) and end.usage == usage


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_deltas_become_reasoning_chunks(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider, field: str
) -> None:
    scripted_llm.script([Turn.text("The answer is 4.", reasoning="2 plus 2 is 4", reasoning_field=field)])
    chunks = await collect(make_provider())
    reasoning = [c for c in chunks if isinstance(c, ReasoningChunk)]
    assert "".join(c.text for c in reasoning) == "2 plus 2 is 4"
    assert len(reasoning) == 2  # 8-character pieces
    assert chunks.index(reasoning[-1]) < chunks.index(next(c for c in chunks if isinstance(c, TextChunk)))
    assert text_of(chunks) == "The answer is 4."


@pytest.mark.parametrize("quirk", [{}, {"repeat_ids": True}, {"omit_ids": True}])
async def test_tool_call_deltas_are_accumulated_by_index(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider, quirk: dict[str, Any]
) -> None:
    args = {"command": "ls -la /workspace && echo done"}
    scripted_llm.script([Turn.tool("run_command", args, id="call_abc", chunk_chars=4, **quirk)])
    chunks = await collect(make_provider(), tools=TOOLS)
    calls = [c for c in chunks if isinstance(c, ToolCallChunk)]
    assert len(calls) > 5
    assert {(c.index, c.id, c.name) for c in calls} == {
        (0, "call_abc" if not quirk.get("omit_ids") else calls[0].id, "run_command")
    }
    if quirk.get("omit_ids"):
        assert re.fullmatch(r"call_[0-9a-f]{24}", calls[0].id)
    assert json.loads("".join(c.arguments_delta for c in calls)) == args
    end = chunks[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "tool_calls"


async def test_parallel_tool_calls(scripted_llm: ScriptedLLM, make_provider: MakeProvider) -> None:
    scripted_llm.script([
        Turn.tools(
            Turn.call("run_command", {"command": "pwd"}),
            Turn.call("read_file", {"path": "README.md"}),
            text="Let me look.",
            repeat_ids=True,
        )
    ])
    chunks = await collect(make_provider(), tools=TOOLS)
    assert text_of(chunks) == "Let me look."
    by_index: dict[int, list[ToolCallChunk]] = {}
    for chunk in chunks:
        if isinstance(chunk, ToolCallChunk):
            by_index.setdefault(chunk.index, []).append(chunk)
    assert sorted(by_index) == [0, 1]
    first, second = by_index[0], by_index[1]
    assert {c.name for c in first} == {"run_command"} and {c.name for c in second} == {"read_file"}
    assert len({c.id for c in first}) == 1 and len({c.id for c in second}) == 1
    assert first[0].id != second[0].id
    assert json.loads("".join(c.arguments_delta for c in first)) == {"command": "pwd"}
    assert json.loads("".join(c.arguments_delta for c in second)) == {"path": "README.md"}


def test_accumulator_takes_id_and_name_once_and_waits_for_the_name() -> None:
    acc = ToolCallAccumulator()

    def delta(index: int, id: str | None = None, name: str | None = None, args: str | None = None) -> Any:
        function = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
        return {"index": index, **({"id": id} if id else {}), "function": function}

    out = list(acc.feed([delta(0, id="call_1", args='{"a"')]))
    assert out == []  # arguments before the name are held back
    out += acc.feed([delta(0, name="read_file", args=": 1")])
    out += acc.feed([delta(0, id="call_1", name="read_file", args="}")])
    assert [(c.index, c.id, c.name, c.arguments_delta) for c in out] == [
        (0, "call_1", "read_file", '{"a": 1'),
        (0, "call_1", "read_file", "}"),
    ]
    # A server that reuses index 0 for a second call with a new id starts a new call.
    out = list(acc.feed([delta(0, id="call_2", name="run_command", args="{}")]))
    assert [(c.index, c.id, c.name) for c in out] == [(1, "call_2", "run_command")]
    acc.check_complete()
    list(acc.feed([delta(5, args="{}")]))
    with pytest.raises(LLMError, match="without a function name"):
        acc.check_complete()


async def test_retries_500_then_succeeds(scripted_llm: ScriptedLLM, make_provider: MakeProvider) -> None:
    scripted_llm.script([Turn.text("recovered", fault={"status": 500, "times": 2})])
    chunks = await collect(make_provider())
    assert text_of(chunks) == "recovered"
    assert len(scripted_llm.requests) == 3


async def test_gives_up_on_500_after_the_configured_attempts(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    scripted_llm.script([Turn.fault(500, message="the GPUs are on fire")])
    with pytest.raises(LLMError) as caught:
        await collect(make_provider(max_retries=2))
    assert str(caught.value) == "LLM endpoint returned 500 after 3 attempts: the GPUs are on fire"
    assert len(scripted_llm.requests) == 3


async def test_429_honours_retry_after(scripted_llm: ScriptedLLM, make_provider: MakeProvider) -> None:
    scripted_llm.script([Turn.text("finally", fault={"status": 429, "times": 1, "retry_after": 0.4})])
    started = time.monotonic()
    chunks = await collect(make_provider(retry_base_s=0.001))
    assert time.monotonic() - started >= 0.39
    assert text_of(chunks) == "finally"
    assert len(scripted_llm.requests) == 2


async def test_retry_after_is_capped(scripted_llm: ScriptedLLM, make_provider: MakeProvider) -> None:
    scripted_llm.script([Turn.text("soon", fault={"status": 429, "times": 1, "retry_after": 3600})])
    chunks = await asyncio.wait_for(collect(make_provider(retry_max_s=0.05)), 10)
    assert text_of(chunks) == "soon"


async def test_invalid_history_is_rejected_and_not_retried(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "run_command", "arguments": "{}"}}
        ]},
        {"role": "user", "content": "and now?"},
    ]
    with pytest.raises(LLMError, match=r"rejected the request \(400\): .*call_1"):
        await collect(make_provider(), history, TOOLS)
    assert len(scripted_llm.requests) == 1
    assert len(scripted_llm.rejections) == 1


async def test_401_is_not_retried(scripted_llm: ScriptedLLM, make_provider: MakeProvider) -> None:
    scripted_llm.script([Turn.fault(401, message="bad key")])
    with pytest.raises(LLMError, match=r"rejected the request \(401\): bad key"):
        await collect(make_provider())
    assert len(scripted_llm.requests) == 1


async def test_server_without_stream_options_still_works(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    rejection = "Unrecognized request argument supplied: stream_options"
    scripted_llm.script([Turn.text("no usage here", fault={"status": 400, "times": 1, "message": rejection})])
    provider = make_provider(max_retries=0)
    chunks = await collect(provider)
    assert text_of(chunks) == "no usage here"
    first, second = scripted_llm.requests
    assert "stream_options" in first and "stream_options" not in second
    end = chunks[-1]
    assert isinstance(end, StreamEnd) and end.usage == {}


async def test_hung_endpoint_fails_within_the_read_timeout(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    scripted_llm.script([Turn.hang()])
    started = time.monotonic()
    with pytest.raises(LLMError, match=r"sent nothing for 0\.5 s"):
        await collect(make_provider(read_timeout_s=0.5, max_retries=0))
    assert 0.45 <= time.monotonic() - started < 3


async def test_a_hang_before_the_first_chunk_is_retried(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    scripted_llm.script([Turn.hang(times=1, text="second try")])
    chunks = await collect(make_provider(read_timeout_s=0.3))
    assert text_of(chunks) == "second try"
    assert len(scripted_llm.requests) == 2


async def test_a_hang_after_the_first_chunk_is_not_retried(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    scripted_llm.script([Turn.hang(after_chunks=1, text="partial answer")])
    received: list[StreamChunk] = []
    with pytest.raises(LLMError, match=r"broke after it started: the endpoint sent nothing for 0\.5 s"):
        async for chunk in make_provider(read_timeout_s=0.5).stream(USER, [], model="m"):
            received.append(chunk)
    assert received == [TextChunk("partial ")]
    assert len(scripted_llm.requests) == 1


async def test_a_drop_mid_stream_is_not_retried(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    scripted_llm.script([Turn.drop(1, text="partial answer")])
    received: list[StreamChunk] = []
    with pytest.raises(LLMError, match="LLM stream broke after it started"):
        async for chunk in make_provider().stream(USER, [], model="m"):
            received.append(chunk)
    assert received == [TextChunk("partial ")]
    assert len(scripted_llm.requests) == 1


async def test_a_drop_before_the_first_chunk_is_retried(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    scripted_llm.script([Turn.drop(0, times=1, text="whole answer")])
    assert text_of(await collect(make_provider())) == "whole answer"
    assert len(scripted_llm.requests) == 2


async def test_unreachable_endpoint(make_provider: MakeProvider) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LLMError, match=r"LLM call failed after 2 attempts: connection error"):
        await collect(make_provider(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1))


async def test_cancelling_the_consumer_closes_the_response(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    scripted_llm.script([Turn.text("slow words", chunk_chars=1, delay_ms=30_000)])
    provider = make_provider(read_timeout_s=60)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(USER, [], model="m"):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1
    await scripted_llm.wait_until_async(lambda: scripted_llm.disconnects == 1)


async def test_leaving_the_loop_early_closes_the_response(
    scripted_llm: ScriptedLLM, make_provider: MakeProvider
) -> None:
    scripted_llm.script([Turn.text("slow words", chunk_chars=1, delay_ms=30_000)])
    stream = make_provider(read_timeout_s=60).stream(USER, [], model="m")
    async with contextlib.aclosing(stream):
        async for chunk in stream:
            assert chunk == TextChunk("s")
            break
    await scripted_llm.wait_until_async(lambda: scripted_llm.disconnects == 1)


def test_from_settings() -> None:
    settings = Settings(
        llm_connect_timeout_s=1.5, llm_read_timeout_s=7.0, llm_max_retries=5, llm_retry_base_s=0.25
    )
    model = ModelConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key="sk-test")
    provider = OpenAICompatProvider.from_settings(settings, model)
    assert (provider.base_url, provider.connect_timeout_s, provider.read_timeout_s) == (
        "http://127.0.0.1:9/v1", 1.5, 7.0
    )
    assert (provider.max_retries, provider.retry_base_s) == (5, 0.25)
    asyncio.run(provider.aclose())


@contextlib.asynccontextmanager
async def answering(raw: bytes, heads: list[bytes] | None = None) -> AsyncIterator[str]:
    """An endpoint that answers every request with `raw` (a whole HTTP response) and closes;
    the request heads go to `heads`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if heads is not None:
            heads.append(head)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        writer.write(raw)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        await server.wait_closed()


def json_server(answer: dict[str, Any]) -> contextlib.AbstractAsyncContextManager[str]:
    """An endpoint that ignores `stream: true` and answers with one JSON chat completion."""
    payload = json.dumps(answer).encode()
    return answering(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(payload), payload))


async def test_a_server_that_ignores_stream_true_is_read_whole(make_provider: MakeProvider) -> None:
    answer = {
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.", "reasoning_content": "think",
            "tool_calls": [{"id": "call_a", "type": "function",
                            "function": {"name": "read_file", "arguments": '{"path": "a"}'}}],
        }}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    async with json_server(answer) as url:
        chunks = await collect(make_provider(base_url=url), tools=TOOLS)
    assert chunks[:-1] == [
        ReasoningChunk("think"),
        TextChunk("Let me look."),
        ToolCallChunk(index=0, id="call_a", name="read_file", arguments_delta='{"path": "a"}'),
    ]
    end = chunks[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "tool_calls" and end.usage["total_tokens"] == 7


async def test_a_whole_answer_reporting_an_error_fails_clearly(make_provider: MakeProvider) -> None:
    async with json_server({"error": {"message": "model overloaded"}}) as url:
        with pytest.raises(LLMError, match="reported an error: model overloaded"):
            await collect(make_provider(base_url=url))


async def test_a_redirect_says_where_to_point_base_url(make_provider: MakeProvider) -> None:
    moved = b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://api.example.invalid/v1/chat/completions\r\nContent-Length: 0\r\n\r\n"
    async with answering(moved) as url:
        with pytest.raises(LLMError, match=r"rejected the request \(308\): it redirects to https://api.example.invalid"):
            await collect(make_provider(base_url=url))


async def test_an_api_key_with_a_trailing_newline_is_trimmed(make_provider: MakeProvider) -> None:
    heads: list[bytes] = []
    payload = b'{"choices": []}'
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
    async with answering(ok, heads) as url:
        provider = OpenAICompatProvider(url, "sk-secret\n", connect_timeout_s=2, read_timeout_s=5)
        try:
            await collect(provider)
        finally:
            await provider.aclose()
    assert b"\r\nAuthorization: Bearer sk-secret\r\n" in heads[0]
    with pytest.raises(LLMError, match="line break"):
        OpenAICompatProvider(url, "sk-one\nsk-two")


async def test_a_provider_keeps_as_many_idle_connections_as_runs_may_be_active(tmp_path: Any) -> None:
    """After a burst of runs the next burst reuses their connections (no connect, no TLS handshake)."""
    settings = Settings(home=tmp_path, max_active_runs=7)
    provider = OpenAICompatProvider.from_settings(settings, ModelConfig(base_url="http://127.0.0.1:9/v1", model="m"))
    try:
        assert provider._http.max_idle == 7
    finally:
        await provider.aclose()
