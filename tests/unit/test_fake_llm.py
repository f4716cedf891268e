"""The scripted LLM server over real HTTP: wire format, strict validation, step selection, faults, admin."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onward.testing import ScriptedLLM, Turn

TOOLS = [{"type": "function", "function": {"name": "run_command", "parameters": {"type": "object"}}}]


def call(id: str, name: str = "run_command") -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": "{}"}}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def chat(http: httpx.Client, llm: ScriptedLLM, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    body = {"model": "m", "messages": messages, **extra}
    return http.post(f"{llm.base_url}/chat/completions", json=body)


def reply_text(http: httpx.Client, llm: ScriptedLLM, messages: list[dict[str, Any]], **extra: Any) -> str:
    response = chat(http, llm, messages, **extra)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def sse_events(http: httpx.Client, llm: ScriptedLLM, messages: list[dict[str, Any]], **extra: Any) -> list[Any]:
    response = chat(http, llm, messages, stream=True, **extra)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    return [f[6:] if f == "data: [DONE]" else json.loads(f[6:]) for f in frames]


def test_starts_fast_and_stops_cleanly() -> None:
    started = time.monotonic()
    llm = ScriptedLLM().start()
    try:
        assert time.monotonic() - started < 0.5
        assert httpx.get(f"{llm.base_url}/models").json()["data"][0]["id"] == "scripted"
    finally:
        llm.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{llm.base_url}/models")


def test_non_streaming_reply(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script([Turn.tool("run_command", {"command": "ls"}, id="call_x", reasoning="hmm")])
    data = chat(http, scripted_llm, [{"role": "user", "content": "hi"}], tools=TOOLS).json()
    assert data["object"] == "chat.completion" and data["model"] == "m"
    (choice,) = data["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["reasoning_content"] == "hmm"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_x", "type": "function", "function": {"name": "run_command", "arguments": '{"command": "ls"}'}}
    ]
    assert data["usage"]["total_tokens"] > 0


def test_streaming_wire_format(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script([Turn.text("Hello there", chunk_chars=4)])
    user = [{"role": "user", "content": "hi"}]
    events = sse_events(http, scripted_llm, user, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [e["choices"][0]["delta"].get("content") for e in events[1:-3]]
    assert deltas == ["Hell", "o th", "ere"]
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] > 0
    # Without include_usage there is no usage chunk, as with the real API.
    events = sse_events(http, scripted_llm, user)
    assert all("usage" not in e for e in events[:-1])


def test_deltas_mode_streams_many_one_char_deltas(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script([{"deltas": 5000}])
    events = sse_events(http, scripted_llm, [{"role": "user", "content": "bench"}])
    texts = [e["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert texts == ["x"] * 5000


@pytest.mark.parametrize(
    ("messages", "extra", "reason"),
    [
        pytest.param(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call("c1")]},
             {"role": "user", "content": "again"}],
            {"tools": TOOLS}, "c1", id="unanswered-tool-call",
        ),
        pytest.param(
            [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c9", "content": "x"}],
            {}, "c9", id="orphan-tool-message",
        ),
        pytest.param(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call("c1", "rm")]},
             {"role": "tool", "tool_call_id": "c1", "content": "x"}],
            {"tools": TOOLS}, "'rm'", id="tool-not-offered",
        ),
        pytest.param([{"role": "user", "content": "hi"}], {"tools": []}, "non-empty", id="empty-tools"),
        pytest.param([{"role": "user", "content": "hi"}], {"tools": [{"name": "x"}]}, "tools[0]", id="bad-tool"),
        pytest.param([], {}, "empty", id="no-messages"),
        pytest.param(
            [{"role": "user", "content": "hi"}], {"stream_options": {"include_usage": True}},
            "only allowed when 'stream'", id="stream-options-without-stream",
        ),
    ],
)
def test_rejects_what_strict_apis_reject(
    http: httpx.Client, scripted_llm: ScriptedLLM, messages: list[dict[str, Any]], extra: dict[str, Any], reason: str
) -> None:
    response = chat(http, scripted_llm, messages, **extra)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and reason in error["message"]
    assert scripted_llm.rejections == [error["message"]]


def test_rejects_missing_model_and_bad_json(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    url = f"{scripted_llm.base_url}/chat/completions"
    no_model = http.post(url, json={"messages": [{"role": "user", "content": "hi"}]})
    assert no_model.status_code == 400 and "model" in no_model.json()["error"]["message"]
    garbage = http.post(url, content=b"{not json")
    assert garbage.status_code == 400
    assert len(scripted_llm.rejections) == 2 and len(scripted_llm.requests) == 2


def test_accepts_a_valid_tool_history(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1"), call("c2")]},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
    ]
    assert reply_text(http, scripted_llm, history, tools=TOOLS) == "OK"
    assert scripted_llm.rejections == []


def test_step_is_chosen_from_the_request_alone(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script([Turn.tool("run_command", {}, id="c1"), Turn.text("second"), Turn.text("third")])
    user: dict[str, Any] = {"role": "user", "content": "go"}
    assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call("c1")]}
    tool: dict[str, Any] = {"role": "tool", "tool_call_id": "c1", "content": "out"}
    step1 = [user, assistant, tool]
    step2 = [*step1, {"role": "assistant", "content": "", "tool_calls": [call("c2")]},
             {"role": "tool", "tool_call_id": "c2", "content": "out"}]
    step3 = [*step2, {"role": "assistant", "content": None, "tool_calls": [call("c3")]},
             {"role": "tool", "tool_call_id": "c3", "content": "out"}]
    results: dict[str, str] = {}

    def ask(name: str, messages: list[dict[str, Any]]) -> None:
        results[name] = reply_text(http, scripted_llm, messages, tools=TOOLS)

    threads = [threading.Thread(target=ask, args=a) for a in (("s1", step1), ("s2", step2), ("s3", step3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"s1": "second", "s2": "third", "s3": "Done."}
    # Step 0 of a new user message starts the script again, even late in a long history.
    later: list[dict[str, Any]] = [*step1, {"role": "assistant", "content": "fine"}, {"role": "user", "content": "more"}]
    assert chat(http, scripted_llm, later, tools=TOOLS).json()["choices"][0]["message"]["tool_calls"][0]["id"] == "c1"


def test_match_and_priority(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    assert reply_text(http, scripted_llm, [{"role": "user", "content": "anything"}]) == "OK"
    scripted_llm.script([Turn.text("general")])
    scripted_llm.script([Turn.text("weather")], match=r"\bweather\b")
    scripted_llm.script([Turn.text("newest")], match="news")
    assert reply_text(http, scripted_llm, [{"role": "user", "content": "the weather today"}]) == "weather"
    assert reply_text(http, scripted_llm, [{"role": "user", "content": "any news?"}]) == "newest"
    assert reply_text(http, scripted_llm, [{"role": "user", "content": "hello"}]) == "general"
    # Only the last user message is searched.
    history = [{"role": "user", "content": "weather"}, {"role": "assistant", "content": "sun"},
               {"role": "user", "content": "thanks"}]
    assert reply_text(http, scripted_llm, history) == "general"
    scripted_llm.reset()
    assert reply_text(http, scripted_llm, [{"role": "user", "content": "weather"}]) == "OK"


def test_fault_counts_per_script_and_step(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script([Turn.text("up", fault={"status": 503, "times": 2})])
    user = [{"role": "user", "content": "hi"}]
    assert [chat(http, scripted_llm, user).status_code for _ in range(3)] == [503, 503, 200]
    scripted_llm.script([Turn.fault(429, retry_after=2)], match="limit")
    limited = chat(http, scripted_llm, [{"role": "user", "content": "limit"}])
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["type"] == "rate_limit_error"


def test_drop_after_chunks_cuts_the_connection(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script([Turn.drop(2, text="abcdefghijklmnopqrstuvwxyz", chunk_chars=2)])
    received: list[str] = []
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{scripted_llm.base_url}/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:])["choices"][0]["delta"].get("content"))
    assert received == ["", "ab", "cd"]


def test_hang_is_noticed_when_the_client_gives_up(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script([Turn.hang()])
    with pytest.raises(httpx.ReadTimeout):
        chat_timeout = httpx.Timeout(5, read=0.2)
        httpx.post(f"{scripted_llm.base_url}/chat/completions", timeout=chat_timeout,
                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    scripted_llm.wait_until(lambda: scripted_llm.disconnects == 1)


def test_stop_ends_hanging_requests_promptly(http: httpx.Client) -> None:
    llm = ScriptedLLM().start()
    llm.script([Turn.hang()])
    errors: list[Exception] = []

    def hang() -> None:
        try:
            chat(http, llm, [{"role": "user", "content": "hi"}])
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    llm.wait_until(lambda: len(llm.requests) == 1)
    started = time.monotonic()
    llm.stop()
    assert time.monotonic() - started < 2
    thread.join(5)
    assert not thread.is_alive()


def test_admin_endpoints(http: httpx.Client, scripted_llm: ScriptedLLM) -> None:
    base = scripted_llm.url
    created = http.post(f"{base}/_scripts", json={"match": "ping", "turns": [{"text": "pong"}]})
    assert created.status_code == 201 and isinstance(created.json()["id"], int)
    assert reply_text(http, scripted_llm, [{"role": "user", "content": "ping"}]) == "pong"
    chat(http, scripted_llm, [])
    seen = http.get(f"{base}/_requests").json()
    assert [r["messages"] for r in seen["requests"]] == [[{"role": "user", "content": "ping"}], []]
    assert len(seen["rejections"]) == 1
    bad = http.post(f"{base}/_scripts", json={"turns": [{"txt": "typo"}]})
    assert bad.status_code == 400 and "txt" in bad.json()["error"]["message"]
    assert http.delete(f"{base}/_scripts").status_code == 200
    assert http.get(f"{base}/_requests").json()["requests"] == []
    assert reply_text(http, scripted_llm, [{"role": "user", "content": "ping"}]) == "OK"


def test_command_line_server(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"match": None, "turns": [{"text": "from a file"}]}]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "onward.testing.fake_llm", "--port", "0", "--script", str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        data = httpx.post(f"{base_url}/chat/completions", json=body).json()
        assert data["choices"][0]["message"]["content"] == "from a file"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Warning" not in stderr, stderr
