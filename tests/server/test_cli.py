"""The command-line client against a real server: what a person types and sees."""

from __future__ import annotations

import os
import subprocess
import sys

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import Api, tool_call


def onward(server: OnwardServer, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONWARD_")}
    env["ONWARD_URL"] = server.url
    env["XDG_CONFIG_HOME"] = str(server.home / "config")
    token = server.auth_headers().get("Authorization", "").removeprefix("Bearer ")
    if token:
        env["ONWARD_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "onward", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_chat_renders_the_run_and_exits_0(server: OnwardServer, llm: ScriptedLLM) -> None:
    llm.script(
        [{"reasoning": "hmm", "tool_calls": [tool_call("run_command", {"command": "echo from-the-shell"})]}, {"text": "All done here."}],
        match="CLI-CHAT",
    )
    result = onward(server, "chat", "CLI-CHAT please")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "from-the-shell" in out and "All done here." in out and "run_command" in out
    assert "\x1b[" not in out  # not a terminal: plain text


def test_attach_replays_and_stop_reports_a_finished_run(server: OnwardServer, llm: ScriptedLLM, api: Api) -> None:
    llm.script([{"text": "Replayed words."}], match="CLI-ATTACH")
    cid = api.conversation()
    rid = api.start(cid, "CLI-ATTACH")["id"]
    api.wait_terminal(rid)
    attached = onward(server, "attach", rid)
    assert attached.returncode == 0 and "Replayed words." in attached.stdout
    stopped = onward(server, "stop", rid)
    assert stopped.returncode == 0 and "already completed" in stopped.stdout
    runs = onward(server, "runs")
    assert runs.returncode == 0 and rid in runs.stdout


def test_stop_a_running_run_from_the_cli(server: OnwardServer, llm: ScriptedLLM, api: Api) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="CLI-STOP")
    cid = api.conversation()
    rid = api.start(cid, "CLI-STOP")["id"]
    api.wait_for(rid, lambda e: e["type"] == "tool.output")
    stopped = onward(server, "stop", rid)
    assert stopped.returncode == 0 and "cancelling" in stopped.stdout
    assert api.wait_terminal(rid)[-1]["type"] == "run.cancelled"
    attached = onward(server, "attach", rid)
    assert attached.returncode == 130


def test_errors_are_one_line_without_a_traceback(server: OnwardServer) -> None:
    missing = onward(server, "attach", "run_doesnotexist")
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "no run" in missing.stderr
    env_server = OnwardServer(server.home / "nowhere")
    unreachable = onward(env_server, "runs")
    assert unreachable.returncode == 2 and "onward serve" in unreachable.stderr


def test_serve_refuses_an_impossible_sandbox_setting_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONWARD_")}
    env.update({"ONWARD_HOME": str(tmp_path), "ONWARD_SANDBOX": "bwrap", "ONWARD_BWRAP_PATH": "/nonexistent"})
    result = subprocess.run(
        [sys.executable, "-m", "onward", "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "bubblewrap" in result.stderr and "Traceback" not in result.stderr
