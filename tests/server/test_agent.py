"""The agent loop end to end: reasoning, parallel tools, quirky servers, limits."""

from __future__ import annotations

from pathlib import Path

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import Api, tool_call


def test_reasoning_text_and_usage_are_streamed_and_stored(api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"reasoning": "Let me think.", "text": "The answer is 4.", "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}], match="THINK")
    cid = api.conversation()
    rid = api.start(cid, "THINK: 2+2?")["id"]
    events = api.wait_terminal(rid)
    types = [e["type"] for e in events]
    assert types[0] == "run.started" and types[1] == "message.started"
    assert "".join(e["data"]["text"] for e in events if e["type"] == "reasoning.delta") == "Let me think."
    assert "".join(e["data"]["text"] for e in events if e["type"] == "message.delta") == "The answer is 4."
    completed = next(e["data"] for e in events if e["type"] == "message.completed")
    assert completed["content"] == "The answer is 4." and completed["reasoning"] == "Let me think."
    assert events[-1]["data"]["usage"]["total_tokens"] == 15
    assistant = api.messages(cid)[-1]
    assert assistant["role"] == "assistant" and assistant["reasoning"] == "Let me think."
    assert api.run(rid)["usage"]["total_tokens"] == 15
    # reasoning is shown to people, never sent back to the model
    nxt = api.start(cid, "and 3+3?")["id"]
    api.wait_terminal(nxt)
    assert all("reasoning" not in m for m in llm.requests[-1]["messages"])


def test_parallel_tool_calls_with_a_server_that_repeats_ids(api: Api, llm: ScriptedLLM) -> None:
    llm.script(
        [
            {
                "tool_calls": [
                    tool_call("write_file", {"path": "a.txt", "content": "alpha"}),
                    tool_call("run_command", {"command": "echo beta > b.txt; echo done"}),
                ],
                "repeat_ids": True,
                "chunk_chars": 3,
            },
            {"tool_calls": [tool_call("run_command", {"command": "cat a.txt b.txt"})]},
            {"text": "Both files exist."},
        ],
        match="PARALLEL",
    )
    cid = api.conversation()
    rid = api.start(cid, "PARALLEL")["id"]
    events = api.wait_terminal(rid)
    assert events[-1]["type"] == "run.completed"
    started = [e["data"] for e in events if e["type"] == "tool.started"]
    assert [s["name"] for s in started[:2]] == ["write_file", "run_command"]
    # names were taken once, not concatenated from every repeated delta
    deltas = [e["data"] for e in events if e["type"] == "tool.call.delta"]
    assert {d["name"] for d in deltas} == {"write_file", "run_command"}
    results = [e["data"] for e in events if e["type"] == "tool.completed"]
    assert [r["status"] for r in results] == ["ok", "ok", "ok"]
    assert [m["meta"]["status"] for m in api.messages(cid) if m["role"] == "tool"] == ["ok", "ok", "ok"]
    assert "alpha" in results[2]["content"] and "beta" in results[2]["content"]
    messages = api.messages(cid)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]


def test_command_output_streams_live_and_is_truncated_in_history(api: Api, llm: ScriptedLLM) -> None:
    llm.script(
        [{"tool_calls": [tool_call("run_command", {"command": "seq 1 20000; echo err >&2; exit 3"})]}, {"text": "ok"}],
        match="BIGOUT",
    )
    cid = api.conversation()
    rid = api.start(cid, "BIGOUT")["id"]
    events = api.wait_terminal(rid)
    streamed = "".join(e["data"]["text"] for e in events if e["type"] == "tool.output" and e["data"]["stream"] == "stdout")
    assert streamed.splitlines()[-1] == "20000"
    assert any(e["data"]["stream"] == "stderr" for e in events if e["type"] == "tool.output")
    result = next(e["data"] for e in events if e["type"] == "tool.completed")
    assert result["status"] == "error" and "exit code 3" in result["content"]
    assert "truncated" in result["content"] and len(result["content"]) <= 16_000
    tool_message = next(m for m in api.messages(cid) if m["role"] == "tool")
    assert tool_message["content"] == result["content"]


def test_step_limit_ends_the_run_with_a_valid_history(llm: ScriptedLLM, tmp_path: Path) -> None:
    loop = [{"tool_calls": [tool_call("list_files", {})]}] * 5
    llm.script(loop, match="LOOPY")
    with OnwardServer(tmp_path / "home", llm.base_url, max_steps=3) as server:
        api = Api(server.url, server.auth_headers())
        cid = api.conversation()
        rid = api.start(cid, "LOOPY")["id"]
        events = api.wait_terminal(rid)
        assert events[-1]["type"] == "run.failed"
        assert events[-1]["data"]["code"] == "step_limit"
        assert len([e for e in events if e["type"] == "message.completed"]) == 3
        rejected = len(llm.rejections)
        nxt = api.start(cid, "go on")["id"]
        api.wait_terminal(nxt)
        assert len(llm.rejections) == rejected
        api.http.close()


def test_run_timeout_fails_the_run_and_kills_the_command(llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="SLOWPOKE")
    with OnwardServer(tmp_path / "home", llm.base_url, run_timeout_s=1) as server:
        api = Api(server.url, server.auth_headers())
        cid = api.conversation()
        rid = api.start(cid, "SLOWPOKE")["id"]
        events = api.wait_terminal(rid)
        assert events[-1]["type"] == "run.failed" and events[-1]["data"]["code"] == "timeout"
        result = next(e["data"] for e in events if e["type"] == "tool.completed")
        assert result["status"] == "error"
        api.http.close()


def test_runs_listing_and_active_filter(api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="LISTME")
    cid = api.conversation()
    rid = api.start(cid, "LISTME")["id"]
    api.wait_for(rid, lambda e: e["type"] == "tool.output")
    active = api.http.get("/api/runs", params={"active": "true"}).json()["runs"]
    assert rid in [r["id"] for r in active]
    conv = api.http.get(f"/api/conversations/{cid}").json()
    assert conv["active_run"]["id"] == rid and conv["active_run"]["status"] == "running"
    listed = {c["id"]: c for c in api.http.get("/api/conversations").json()["conversations"]}
    assert listed[cid]["active_run_id"] == rid
    mine = api.http.get("/api/runs", params={"conversation_id": cid}).json()["runs"]
    assert [r["id"] for r in mine] == [rid]
    api.cancel(rid)
    api.wait_terminal(rid)
    listed = {c["id"]: c for c in api.http.get("/api/conversations").json()["conversations"]}
    assert listed[cid]["active_run_id"] is None
    tool_message = next(m for m in api.messages(cid) if m["role"] == "tool")
    assert tool_message["meta"]["status"] == "cancelled"
    active = api.http.get("/api/runs", params={"active": "true"}).json()["runs"]
    assert rid not in [r["id"] for r in active]
    assert api.http.get(f"/api/conversations/{cid}").json()["active_run"] is None
