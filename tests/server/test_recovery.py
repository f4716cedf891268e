"""`kill -9` of the server in the middle of a command, then a restart (invariants 1, 4, 6)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx

from onward.core.messages import validate_history
from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import Api, alive, host_pids, tool_call, wait_dead


def test_kill_9_mid_command_then_restart(llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.script(
        [{"text": "Let me run it.", "tool_calls": [tool_call("run_command", {"command": 'echo "pid $$"; exec sleep 60'})]}],
        match="CRASH",
    )
    # Unsandboxed: a bubblewrap sandbox dies with the server (tests/server/test_sandbox.py), so only
    # a plain process group is left for recovery to find.
    server = OnwardServer(tmp_path / "home", llm.base_url, sandbox="none")
    server.start()
    try:
        api = Api(server.url, server.auth_headers())
        cid = api.conversation()
        rid = api.start(cid, "CRASH")["id"]
        api.wait_for(rid, lambda e: e["type"] == "tool.output")
        before = api.log(rid)
        pid = int(re.findall(r"pid (\d+)", "".join(e["data"].get("text", "") for e in before))[0])
        assert alive(pid)
        api.http.close()

        server.kill(signal.SIGKILL)
        assert alive(pid), "the command outlives a kill -9 of the server (its own session)"

        server.start()
        api = Api(server.url, server.auth_headers())
        run = api.run(rid)
        assert run["status"] == "interrupted"
        after = api.log(rid)
        assert after[: len(before)] == before
        assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
        assert after[-1]["type"] == "run.interrupted"
        assert next(e for e in after if e["type"] == "tool.completed")["data"]["status"] == "interrupted"
        assert wait_dead([pid]) == []

        messages = api.messages(cid)
        wire = [{k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id")} for m in messages]
        validate_history([*wire, {"role": "user", "content": "next"}])

        rejected = len(llm.rejections)
        nxt = api.start(cid, "what happened?")["id"]
        assert api.wait_terminal(nxt)[-1]["type"] == "run.completed"
        assert len(llm.rejections) == rejected
        api.http.close()
    finally:
        server.stop()


def test_sigterm_interrupts_running_runs_after_the_grace_period(llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": 'echo "pid $$"; exec sleep 60'})]}], match="TERM")
    server = OnwardServer(tmp_path / "home", llm.base_url, shutdown_grace_s=0.5)
    server.start()
    api = Api(server.url, server.auth_headers())
    cid = api.conversation()
    rid = api.start(cid, "TERM")["id"]
    api.wait_for(rid, lambda e: e["type"] == "tool.output")
    pid = int(re.findall(r"pid (\d+)", "".join(e["data"].get("text", "") for e in api.log(rid)))[0])
    [pid] = host_pids(rid, [pid])
    api.http.close()
    # uvicorn re-raises the signal after a clean shutdown, so the exit status says SIGTERM
    assert server.kill(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert wait_dead([pid]) == []
    server.start()
    api = Api(server.url, server.auth_headers())
    log = api.log(rid)
    assert log[-1]["type"] == "run.interrupted"
    assert log[-1]["data"]["reason"] == "server shutting down"
    assert api.run(rid)["status"] == "interrupted"
    api.http.close()
    server.stop()



def test_during_the_shutdown_grace_period_no_new_run_starts(llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="GRACE")
    server = OnwardServer(tmp_path / "home", llm.base_url, shutdown_grace_s=3)
    server.start()
    api = Api(server.url, server.auth_headers())
    cid = api.conversation()
    other = api.conversation()
    rid = api.start(cid, "GRACE")["id"]
    api.wait_for(rid, lambda e: e["type"] == "tool.output")
    api.http.close()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    refused = 0
    deadline = time.monotonic() + 10
    while refused == 0 and time.monotonic() < deadline:
        try:  # a fresh connection each time: no new run may start once SIGTERM is handled
            r = httpx.post(f"{server.url}/api/conversations/{other}/runs", json={"input": "late"},
                           headers=server.auth_headers(), timeout=5)
        except httpx.ConnectError:
            refused = 1
        else:
            if r.status_code == 503:
                refused = 1
            else:
                assert r.status_code in (202, 409), r.text  # accepted before the signal was handled
                time.sleep(0.02)
    assert refused, "runs were still accepted 10 s after SIGTERM"
    server.proc.wait(30)
    server.start()
    api = Api(server.url, server.auth_headers())
    assert api.run(rid)["status"] == "interrupted"  # it ran through the grace period, then ended
    api.http.close()
    server.stop()
