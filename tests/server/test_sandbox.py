"""The sandbox as the server uses it: commands of a real run cannot reach the server's port, its
home or another user's workspace; they die with the server; without bubblewrap one user runs
unsandboxed with a visible warning and several users get no commands at all."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest

from onward.core.messages import validate_history
from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from onward.tools.sandbox import REFUSED_MESSAGE
from tests.server.conftest import SERVER_SETTINGS
from tests.server.helpers import Api, run_pids, tool_call, wait_dead


def completed(events: list[dict[str, object]]) -> list[dict[str, str]]:
    return [e["data"] for e in events if e["type"] == "tool.completed"]  # type: ignore[misc]


def test_commands_cannot_reach_the_server_its_home_or_other_workspaces(server: OnwardServer, llm: ScriptedLLM, api: Api) -> None:
    assert api.http.get("/api/auth/me").json()["sandbox"] == "bwrap"
    other = server.create_user("neighbour", "neighbour-password")
    neighbour = Api(server.url, server.login("neighbour", "neighbour-password"))
    neighbour.http.post("/api/files/upload", files={"file": ("diary.txt", b"dear diary")})
    neighbour.http.close()
    connect = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {server.port}), timeout=3); print('CONNECTED')\""
    commands = [
        connect,
        f"curl -s http://127.0.0.1:{server.port}/api/health || wget -qO- http://127.0.0.1:{server.port}/api/health || echo no-client; exit 1",
        f"cat {server.home}/onward.db",
        f"cat {server.home}/workspaces/{other['id']}/diary.txt",
        f"ls {server.home}",
    ]
    calls = [tool_call("run_command", {"command": c}, call_id=f"call_escape_{i}") for i, c in enumerate(commands)]
    llm.script([{"tool_calls": calls}, {"text": "tried"}], match="ESCAPES")
    rid = api.start(api.conversation(), "ESCAPES")["id"]
    by_id = {r["call_id"]: r for r in completed(api.wait_terminal(rid))}
    results = [by_id[f"call_escape_{i}"] for i in range(len(commands))]  # tools finish in any order
    for command, result in zip(commands, results, strict=True):
        assert result["status"] == "error", (command, result)
        assert "CONNECTED" not in result["content"] and '"ok":true' not in result["content"]
        assert "dear diary" not in result["content"] and "SQLite" not in result["content"]
    assert "Connection refused" in results[0]["content"] or "unreachable" in results[0]["content"]


def test_a_sandboxed_command_dies_with_the_server_and_the_run_is_recovered(llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "setsid sleep 60 & echo ready; exec sleep 60"})]}], match="DIE-WITH")
    server = OnwardServer(tmp_path / "home", llm.base_url)
    server.start()
    try:
        api = Api(server.url, server.auth_headers())
        cid = api.conversation()
        rid = api.start(cid, "DIE-WITH")["id"]
        api.wait_for(rid, lambda e: e["type"] == "tool.output" and "ready" in e["data"]["text"])
        pids = list(run_pids(rid))
        assert len(pids) >= 4  # bwrap, the sandbox's init, the shell's sleep, the setsid sleep
        api.http.close()
        server.kill(signal.SIGKILL)
        assert wait_dead(pids) == [], "everything in the sandbox dies with the server (--die-with-parent)"
        server.start()
        api = Api(server.url, server.auth_headers())
        assert api.run(rid)["status"] == "interrupted"
        wire = [{k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id")} for m in api.messages(cid)]
        validate_history([*wire, {"role": "user", "content": "next"}])
        api.http.close()
    finally:
        server.stop()


def test_without_bubblewrap_one_user_is_warned_and_several_get_no_commands(llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo unsandboxed-$((6*7))"})]}, {"text": "ok"}], match="NO-BWRAP")
    with OnwardServer(tmp_path / "home", llm.base_url, bwrap_path="/nonexistent/bwrap", **SERVER_SETTINGS) as server:
        assert "commands run WITHOUT a sandbox" in server.log()
        api = Api(server.url, server.auth_headers())
        me = api.http.get("/api/auth/me").json()
        assert me["sandbox"] == "none" and "WITHOUT a sandbox" in me["sandbox_warning"]
        first = api.start(api.conversation(), "NO-BWRAP")["id"]
        result = completed(api.wait_terminal(first))[0]
        assert result["status"] == "ok" and "unsandboxed-42" in result["content"]

        server.create_user("second", "second-password")
        me = api.http.get("/api/auth/me").json()
        assert me["sandbox"] == "refused" and "disabled" in me["sandbox_warning"]
        second = api.start(api.conversation(), "NO-BWRAP")["id"]
        result = completed(api.wait_terminal(second))[0]
        assert result["status"] == "error" and REFUSED_MESSAGE in result["content"]
        assert "unsandboxed-42" not in result["content"]
        api.http.close()


def test_sandbox_bwrap_will_not_start_without_bubblewrap(tmp_path: Path) -> None:
    server = OnwardServer(tmp_path / "home", sandbox="bwrap", bwrap_path="/nonexistent/bwrap")
    with pytest.raises(RuntimeError):
        server.start()
    assert re.search(r"sandbox is 'bwrap' but bubblewrap does not work here", server.log())


def test_per_user_run_limits_answer_429_with_retry_after(llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="LIMIT-HOLD")
    settings = {"user_max_active_runs": 1, "user_max_runs_per_window": 3, "user_runs_window_s": 600}
    with OnwardServer(tmp_path / "home", llm.base_url, **settings) as server:
        server.create_user("busy", "busy-password")
        api = Api(server.url, server.login("busy", "busy-password"))
        held = api.start(api.conversation(), "LIMIT-HOLD")["id"]
        api.wait_for(held, lambda e: e["type"] == "tool.output")
        r = api.http.post(f"/api/conversations/{api.conversation()}/runs", json={"input": "one more"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert "user_max_active_runs=1" in r.json()["error"]["message"] and int(r.headers["Retry-After"]) >= 1
        # replacing the active run of a conversation (if_busy=interrupt) is not one more
        held_cid = api.run(held)["conversation_id"]
        replacement = api.start(held_cid, "quick", if_busy="interrupt")["id"]
        assert api.run(held)["status"] == "cancelled"
        api.wait_terminal(replacement)
        cid = api.conversation()
        api.wait_terminal(api.start(cid, "quick")["id"])
        r = api.http.post(f"/api/conversations/{cid}/runs", json={"input": "a fourth in the window"})
        assert r.status_code == 429 and "user_max_runs_per_window=3" in r.json()["error"]["message"]
        assert 500 < int(r.headers["Retry-After"]) <= 600
        # administrators are exempt (limits_exempt_admins)
        admin = Api(server.url, server.auth_headers())
        for _ in range(4):
            admin.wait_terminal(admin.start(admin.conversation(), "quick")["id"])
        api.http.close()
        admin.http.close()
        assert httpx.get(f"{server.url}/api/health").status_code == 200
