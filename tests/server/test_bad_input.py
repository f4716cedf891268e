"""Bad input gets a clear error and loses nothing: from clients, from the model, from the LLM."""

from __future__ import annotations

import pytest

from onward.testing.fake_llm import ScriptedLLM
from tests.server.helpers import Api, tool_call


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/runs/run_nope"),
        ("GET", "/api/runs/run_nope/events"),
        ("GET", "/api/runs/run_nope/stream"),
        ("POST", "/api/runs/run_nope/cancel"),
        ("GET", "/api/conversations/conv_nope"),
        ("PATCH", "/api/conversations/conv_nope"),
        ("DELETE", "/api/conversations/conv_nope"),
        ("POST", "/api/conversations/conv_nope/runs"),
    ],
)
def test_unknown_ids_are_404_with_a_json_error(api: Api, method: str, path: str) -> None:
    body = {"title": "x"} if method == "PATCH" else {"input": "x"} if path.endswith("/runs") else None
    r = api.http.request(method, path, json=body)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_malformed_json_is_400(api: Api) -> None:
    cid = api.conversation()
    r = api.http.post(f"/api/conversations/{cid}/runs", content=b'{"input": "hi"', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"
    assert api.messages(cid) == []


def test_invalid_fields_are_422_naming_the_field(api: Api) -> None:
    cid = api.conversation()
    r = api.http.post(f"/api/conversations/{cid}/runs", json={"input": "hi", "if_busy": "sometimes"})
    assert r.status_code == 422
    assert "if_busy" in r.json()["error"]["message"]
    r = api.http.post(f"/api/conversations/{cid}/runs", json={})
    assert r.status_code == 422 and "input" in r.json()["error"]["message"]


def test_oversized_body_is_413(api: Api) -> None:
    cid = api.conversation()
    r = api.http.post(f"/api/conversations/{cid}/runs", json={"input": "x" * 2_000_000})
    assert r.status_code == 413
    assert "max_body_bytes" in r.json()["error"]["message"]
    assert api.messages(cid) == []


def test_oversized_input_and_empty_input_are_400(api: Api) -> None:
    cid = api.conversation()
    r = api.http.post(f"/api/conversations/{cid}/runs", json={"input": "x" * 200_000})
    assert r.status_code == 400 and "max_input_chars" in r.json()["error"]["message"]
    r = api.http.post(f"/api/conversations/{cid}/runs", json={"input": "   "})
    assert r.status_code == 400
    assert api.messages(cid) == []


def test_unknown_model_is_400(api: Api) -> None:
    cid = api.conversation()
    r = api.http.post(f"/api/conversations/{cid}/runs", json={"input": "hi", "model": "gpt-17"})
    assert r.status_code == 400
    assert "unknown model" in r.json()["error"]["message"]


def test_path_escape_is_an_error_result_and_the_run_goes_on(api: Api, llm: ScriptedLLM) -> None:
    llm.script(
        [{"tool_calls": [tool_call("read_file", {"path": "../../etc/passwd"}), tool_call("write_file", {"path": "/tmp/x", "content": "x"})]}, {"text": "ok"}],
        match="ESCAPE",
    )
    cid = api.conversation()
    rid = api.start(cid, "ESCAPE")["id"]
    events = api.wait_terminal(rid)
    results = [e["data"] for e in events if e["type"] == "tool.completed"]
    assert [r["status"] for r in results] == ["error", "error"]
    assert all("workspace" in r["content"] for r in results)
    assert events[-1]["type"] == "run.completed"


def test_broken_tool_call_json_from_the_model_is_an_error_result(api: Api, llm: ScriptedLLM) -> None:
    llm.script(
        [{"tool_calls": [tool_call("run_command", '{"command": "echo hi"')]}, {"text": "I will fix my JSON."}],
        match="BROKEN-JSON",
    )
    cid = api.conversation()
    rid = api.start(cid, "BROKEN-JSON")["id"]
    events = api.wait_terminal(rid)
    result = next(e["data"] for e in events if e["type"] == "tool.completed")
    assert result["status"] == "error" and "JSON" in result["content"]
    assert events[-1]["type"] == "run.completed"
    assert len([e for e in events if e["type"] == "message.completed"]) == 2


def test_llm_500s_are_retried(api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"text": "recovered", "fault": {"status": 500, "times": 2}}], match="FLAKY")
    cid = api.conversation()
    rid = api.start(cid, "FLAKY")["id"]
    events = api.wait_terminal(rid)
    assert events[-1]["type"] == "run.completed"
    assert "".join(e["data"]["text"] for e in events if e["type"] == "message.delta") == "recovered"


def test_llm_500_forever_fails_the_run_with_the_reason(api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"fault": {"status": 500}}], match="DOWN")
    cid = api.conversation()
    rid = api.start(cid, "DOWN")["id"]
    events = api.wait_terminal(rid)
    assert events[-1]["type"] == "run.failed"
    assert "500" in events[-1]["data"]["error"]
    run = api.run(rid)
    assert run["status"] == "failed" and "500" in run["error"]
    # the failed run left a valid history: the conversation goes on
    nxt = api.start(cid, "try again")["id"]
    assert api.wait_terminal(nxt)[-1]["type"] == "run.completed"


def test_hung_llm_times_out(api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"fault": {"hang": True}}], match="HANG")
    cid = api.conversation()
    rid = api.start(cid, "HANG")["id"]
    events = api.wait_terminal(rid, timeout=60)
    assert events[-1]["type"] == "run.failed"
    assert "sent nothing" in events[-1]["data"]["error"] or "timed out" in events[-1]["data"]["error"]


def test_conversation_crud(api: Api) -> None:
    cid = api.conversation("first")
    r = api.http.patch(f"/api/conversations/{cid}", json={"title": "renamed"})
    assert r.status_code == 200 and r.json()["title"] == "renamed"
    listed = api.http.get("/api/conversations").json()["conversations"]
    assert listed[0]["id"] == cid
    assert api.http.delete(f"/api/conversations/{cid}").status_code == 204
    assert api.http.get(f"/api/conversations/{cid}").status_code == 404


def test_reading_after_an_event_that_does_not_exist_is_400(api: Api) -> None:
    cid = api.conversation()
    rid = api.start(cid, "hello")["id"]
    last = api.wait_terminal(rid)[-1]["seq"]
    for path, params, headers in (
        (f"/api/runs/{rid}/stream", {"after": last + 5}, {}),
        (f"/api/runs/{rid}/stream", {}, {"Last-Event-ID": str(last + 1)}),
        (f"/api/runs/{rid}/events", {"after": last + 1}, {}),
    ):
        r = api.http.get(path, params=params, headers=headers)
        assert r.status_code == 400, (path, r.text)
        assert f"seq {last}" in r.json()["error"]["message"]
    assert api.http.get(f"/api/runs/{rid}/events", params={"after": last}).json()["events"] == []
