"""Stop, for real: queued runs, streaming runs, runs inside commands (invariant 5), and that the
conversation stays usable by a strict LLM API afterwards (invariant 6)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from onward.core.messages import validate_history
from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import Api, alive, host_pids, tool_call, wait_dead


def _history_is_valid(api: Api, cid: str) -> None:
    messages = api.messages(cid)
    wire = [{k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id")} for m in messages]
    validate_history([*wire, {"role": "user", "content": "next"}])


def _next_run_passes(api: Api, llm: ScriptedLLM, cid: str) -> None:
    """The next run in the conversation is accepted by the strict scripted LLM and completes."""
    before = len(llm.rejections)
    rid = api.start(cid, "and now something else")["id"]
    events = api.wait_terminal(rid)
    assert events[-1]["type"] == "run.completed", events[-1]
    assert len(llm.rejections) == before, llm.rejections[before:]


def _pids(events: list[dict[str, Any]]) -> list[int]:
    text = "".join(e["data"]["text"] for e in events if e["type"] == "tool.output")
    return [int(p) for p in re.findall(r"pid (\d+)", text)]


def _stop_inside_command(api: Api, llm: ScriptedLLM, marker: str, command: str, n_pids: int) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": command})]}], match=marker)
    cid = api.conversation()
    rid = api.start(cid, marker)["id"]
    # the pids are printed before "ready", so once "ready" is out, so are they
    api.wait_for(rid, lambda e: e["type"] == "tool.output" and "ready" in e["data"]["text"])
    out = [e for e in api.log(rid) if e["type"] == "tool.output"]
    pids = host_pids(rid, _pids(out))
    assert len(pids) == n_pids and all(alive(p) for p in pids)
    result = api.cancel(rid)
    assert result["changed"] is True
    events = api.wait_terminal(rid)
    assert events[-1]["type"] == "run.cancelled"
    completed = [e for e in events if e["type"] == "tool.completed"]
    assert len(completed) == 1 and completed[0]["data"]["status"] == "cancelled"
    assert "cancelled by the user" in completed[0]["data"]["content"].lower()
    assert wait_dead(pids) == []
    assert api.run(rid)["status"] == "cancelled"
    _history_is_valid(api, cid)
    _next_run_passes(api, llm, cid)


def test_stop_inside_sleep(api: Api, llm: ScriptedLLM) -> None:
    _stop_inside_command(api, llm, "STOP-SLEEP", 'echo "pid $$"; echo ready; exec sleep 60', 1)


def test_stop_kills_background_children_too(api: Api, llm: ScriptedLLM) -> None:
    command = "sh -c 'sleep 60 & echo \"pid $!\"; sleep 60 & echo \"pid $!\"; echo \"pid $$\"; echo ready; wait'"
    _stop_inside_command(api, llm, "STOP-TREE", command, 3)


def test_stop_while_the_llm_streams_keeps_the_partial_text(api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"text": "partial answer " * 50, "chunk_chars": 3, "delay_ms": 20}], match="STOP-STREAM")
    cid = api.conversation()
    rid = api.start(cid, "STOP-STREAM")["id"]
    api.wait_for(rid, lambda e: e["type"] == "message.delta")
    api.cancel(rid)
    events = api.wait_terminal(rid)
    assert events[-1]["type"] == "run.cancelled"
    streamed = "".join(e["data"]["text"] for e in events if e["type"] == "message.delta")
    assert streamed and len(streamed) < len("partial answer " * 50)
    assistant = [m for m in api.messages(cid) if m["role"] == "assistant"]
    assert assistant[-1]["content"] == streamed
    _history_is_valid(api, cid)
    _next_run_passes(api, llm, cid)


def test_stop_twice_and_stop_a_finished_run(api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="STOP-TWICE")
    cid = api.conversation()
    rid = api.start(cid, "STOP-TWICE")["id"]
    api.wait_for(rid, lambda e: e["type"] == "tool.output")
    first = api.cancel(rid)
    second = api.cancel(rid)
    assert first["changed"] is True
    assert second["changed"] is False
    events = api.wait_terminal(rid)
    assert [e["type"] for e in events].count("run.cancelled") == 1
    third = api.cancel(rid)
    assert third["changed"] is False and third["status"] == "cancelled"
    assert "already cancelled" in third["message"]
    assert api.log(rid) == events  # nothing was added by the later cancels

    done = api.start(cid, "a plain question")["id"]
    assert api.wait_terminal(done)[-1]["type"] == "run.completed"
    after = api.cancel(done)
    assert after["changed"] is False and after["status"] == "completed"
    assert after["message"] == "run already completed"
    _next_run_passes(api, llm, cid)


def test_stop_while_queued(llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="HOLD-SLOT")
    with OnwardServer(tmp_path / "home", llm.base_url, max_active_runs=1) as server:
        api = Api(server.url, server.auth_headers())
        busy_cid = api.conversation()
        busy = api.start(busy_cid, "HOLD-SLOT")["id"]
        api.wait_for(busy, lambda e: e["type"] == "tool.output")
        cid = api.conversation()
        queued = api.start(cid, "wait your turn")["id"]
        assert api.run(queued)["status"] == "queued"
        result = api.cancel(queued)
        assert result["status"] == "cancelled" and result["changed"] is True
        assert [e["type"] for e in api.log(queued)] == ["run.cancelled"]
        api.cancel(busy)
        assert api.wait_terminal(busy)[-1]["type"] == "run.cancelled"
        _history_is_valid(api, cid)
        _next_run_passes(api, llm, cid)
        api.http.close()


def test_if_busy_interrupt_replaces_the_active_run(api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="BUSY-1")
    cid = api.conversation()
    first = api.start(cid, "BUSY-1")["id"]
    api.wait_for(first, lambda e: e["type"] == "tool.output")
    r = api.http.post(f"/api/conversations/{cid}/runs", json={"input": "second"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conversation_busy"
    second = api.start(cid, "second", if_busy="interrupt")["id"]
    assert api.run(first)["status"] == "cancelled"
    assert api.wait_terminal(second)[-1]["type"] == "run.completed"
    _history_is_valid(api, cid)
