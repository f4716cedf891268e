"""Escapes from the bubblewrap sandbox, each attempted for real through the run_command tool, and
each failing: other workspaces, $ONWARD_HOME and its database, writes outside the workspace, the
network, a fork bomb, a memory hog, a CPU hog, a symlink followed by a file tool — and Stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onward.config import Settings
from onward.tools.base import ToolContext, ToolResult
from onward.tools.processes import RUN_ID_VAR
from onward.tools.registry import default_registry
from onward.tools.sandbox import REFUSED_MESSAGE, BwrapSandbox, CommandSandbox, choose_sandbox

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make system-deps)")


def settings_for(home: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "sandbox": "bwrap",
        "sandbox_max_processes": 64,
        "sandbox_memory_mb": 256,
        "command_timeout_s": 20,
        **extra,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "workspaces" / "usr_alice").mkdir(parents=True)
    (home / "workspaces" / "usr_bob").mkdir(parents=True)
    (home / "workspaces" / "usr_bob" / "secret.txt").write_text("bob's secret\n")
    db = sqlite3.connect(home / "onward.db")
    db.execute("create table t (x)")
    db.execute("insert into t values ('database secret')")
    db.commit()
    db.close()
    return home


def sandbox_for(settings: Settings) -> Iterator[CommandSandbox]:
    sandbox = choose_sandbox(settings)
    assert sandbox.name == "bwrap", sandbox.warning
    try:
        yield sandbox
    finally:
        sandbox.close()


@pytest.fixture
def sandbox(home: Path) -> Iterator[CommandSandbox]:
    yield from sandbox_for(settings_for(home))


class Outputs:
    def __init__(self) -> None:
        self.text = ""
        self.changed = asyncio.Event()

    def __call__(self, stream: str, text: str) -> None:
        self.text += text
        self.changed.set()


def context(sandbox: CommandSandbox, workspace: Path, run_id: str = "run_sandboxtest") -> ToolContext:
    return ToolContext(
        run_id=run_id,
        call_id="call_1",
        user_id=workspace.name,
        workspace=workspace,
        settings=sandbox.settings,
        sandbox=sandbox,
        emit_output=Outputs(),
    )


async def run(sandbox: CommandSandbox, workspace: Path, command: str, **args: object) -> ToolResult:
    ctx = context(sandbox, workspace)
    return await default_registry().invoke("run_command", json.dumps({"command": command, **args}), ctx)


def marked(run_id: str) -> list[int]:
    """Host pids whose environment carries ONWARD_RUN_ID=run_id (how crash recovery finds them)."""
    marker = f"{RUN_ID_VAR}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_sandbox_is_what_the_design_says(sandbox: CommandSandbox, home: Path) -> None:
    alice = home / "workspaces" / "usr_alice"
    result = asyncio.run(
        run(sandbox, alice, "id -u; pwd; echo $HOME; ls /; cat /proc/self/status | grep CapEff; echo hi > made.txt")
    )
    assert result.status == "ok", result.content
    lines = result.content.splitlines()
    assert lines[0] != "0"  # not root inside
    assert lines[1:3] == ["/workspace", "/workspace"]
    assert set(lines[3:]) >= {"usr", "etc", "tmp", "proc", "dev", "workspace"}
    assert "CapEff:\t0000000000000000" in result.content
    assert (alice / "made.txt").read_text() == "hi\n"


def test_another_users_workspace_is_not_visible(sandbox: CommandSandbox, home: Path) -> None:
    bob = home / "workspaces" / "usr_bob"
    attempts = [f"cat {bob}/secret.txt", "cat ../usr_bob/secret.txt", "cat /workspace/../usr_bob/secret.txt"]
    for command in attempts:
        result = asyncio.run(run(sandbox, home / "workspaces" / "usr_alice", command))
        assert result.status == "error" and "No such file" in result.content, (command, result)
        assert "bob's secret" not in result.content, command
    listing = asyncio.run(run(sandbox, home / "workspaces" / "usr_alice", "ls -a /workspace/.. /"))
    assert listing.status == "ok" and "usr_bob" not in listing.content and "usr_alice" not in listing.content


def test_onward_home_and_its_database_are_not_visible(sandbox: CommandSandbox, home: Path) -> None:
    alice = home / "workspaces" / "usr_alice"
    for command in (f"ls {home}", f"cat {home}/onward.db", f"python3 -c \"print(open('{home}/onward.db','rb').read())\""):
        result = asyncio.run(run(sandbox, alice, command))
        assert result.status == "error", command
        assert "database secret" not in result.content
        assert "No such file" in result.content, result.content
    # nor secrets of the host's /etc (files other users could not read either)
    shadow = asyncio.run(run(sandbox, alice, "cat /etc/shadow"))
    assert shadow.status == "error" and "root:" not in shadow.content


def test_onward_home_inside_a_bound_system_directory_is_hidden(tmp_path: Path) -> None:
    sandbox = BwrapSandbox(settings_for(Path("/usr/local/share/onward-home")), "bwrap")
    argv, _ = sandbox.command("true", tmp_path, tmp_path)
    i = argv.index("--tmpfs", argv.index("--ro-bind"))
    hidden = [argv[j + 1] for j in range(i, len(argv) - 1) if argv[j] == "--tmpfs"]
    assert "/usr/local/share/onward-home" in hidden


def test_writes_outside_the_workspace_fail(sandbox: CommandSandbox, home: Path, tmp_path: Path) -> None:
    alice = home / "workspaces" / "usr_alice"
    target = tmp_path / "outside.txt"
    for command in (f"echo x > {target}", "echo x > /usr/evil", "echo x > /etc/evil", f"echo x > {home}/evil",
                    "echo x > ../usr_bob/evil", "mkdir /evil"):
        result = asyncio.run(run(sandbox, alice, command))
        assert result.status == "error", command
    assert not target.exists() and not Path("/usr/evil").exists() and not Path("/etc/evil").exists()
    assert not Path("/evil").exists()
    assert not (home / "evil").exists() and not (home / "workspaces" / "usr_bob" / "evil").exists()
    # /tmp is private: writable, and gone with the command
    result = asyncio.run(run(sandbox, alice, "echo private > /tmp/onward-sandbox-probe && cat /tmp/onward-sandbox-probe"))
    assert result.status == "ok" and "private" in result.content
    assert not Path("/tmp/onward-sandbox-probe").exists()


class Listener:
    """A TCP server on the host's loopback, like the Onward server's own port."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


CONNECT = "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); print('CONNECTED')\""


def test_the_network_is_off_unless_allowed(home: Path) -> None:
    listener = Listener()
    alice = home / "workspaces" / "usr_alice"
    try:
        for sandbox in sandbox_for(settings_for(home)):
            result = asyncio.run(run(sandbox, alice, CONNECT.format(port=listener.port)))
            assert result.status == "error" and "CONNECTED" not in result.content
            assert "Connection refused" in result.content or "unreachable" in result.content
        assert listener.accepted == 0
        # the control: with sandbox_network the same command gets through
        for sandbox in sandbox_for(settings_for(home, sandbox_network=True)):
            result = asyncio.run(run(sandbox, alice, CONNECT.format(port=listener.port)))
            assert result.status == "ok" and "CONNECTED" in result.content, result.content
    finally:
        listener.close()


def _processes() -> int:
    return sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())


def test_a_fork_bomb_is_contained(sandbox: CommandSandbox, home: Path) -> None:
    before = _processes()
    started = time.monotonic()
    result = asyncio.run(run(sandbox, home / "workspaces" / "usr_alice", "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", timeout_s=15))
    took = time.monotonic() - started
    assert took < 10, f"the fork bomb ran for {took:.1f} s"
    assert "fork" in result.content.lower() or "resource" in result.content.lower(), result.content[-500:]
    assert marked("run_sandboxtest") == []  # nothing of it is left
    assert _processes() < before + 20


def test_a_memory_hog_is_contained(sandbox: CommandSandbox, home: Path) -> None:
    started = time.monotonic()
    result = asyncio.run(run(sandbox, home / "workspaces" / "usr_alice", "python3 -c \"b = bytearray(2 << 30); print('ALLOCATED')\"", timeout_s=15))
    assert time.monotonic() - started < 10
    assert result.status == "error" and "ALLOCATED" not in result.content
    # killed by the memory cgroup (sh reports 128 + SIGKILL), or a MemoryError under RLIMIT_AS
    assert "MemoryError" in result.content or "exit code 137" in result.content, result.content


def test_a_cpu_hog_is_stopped_by_its_cpu_time_limit(home: Path) -> None:
    for sandbox in sandbox_for(settings_for(home, sandbox_cpu_s=1)):
        started = time.monotonic()
        result = asyncio.run(run(sandbox, home / "workspaces" / "usr_alice", "while :; do :; done", timeout_s=15))
        assert time.monotonic() - started < 8
        # sh reports a signal as 128 + its number: SIGXCPU (24) at the soft limit, SIGKILL (9) at the hard one
        assert result.status == "error" and ("exit code 152" in result.content or "exit code 137" in result.content), result.content


def test_a_symlink_made_by_a_command_is_not_followed_out_by_the_file_tools(sandbox: CommandSandbox, home: Path) -> None:
    alice = home / "workspaces" / "usr_alice"
    made = asyncio.run(run(sandbox, alice, f"ln -s {home}/workspaces/usr_bob bob; ln -s /etc/passwd passwd; ln -s {home}/onward.db db; ls -l"))
    assert made.status == "ok", made.content
    ctx = context(sandbox, alice)
    registry = default_registry()
    for name, args in [
        ("read_file", {"path": "bob/secret.txt"}),
        ("read_file", {"path": "passwd"}),
        ("read_file", {"path": "db"}),
        ("list_files", {"path": "bob"}),
        ("write_file", {"path": "bob/evil.txt", "content": "x"}),
        ("edit_file", {"path": "passwd", "old": "root", "new": "toor"}),
    ]:
        result = asyncio.run(registry.invoke(name, json.dumps(args), ctx))
        assert result.status == "error" and "outside the workspace" in result.content, (name, result)
        assert "bob's secret" not in result.content and "database secret" not in result.content
    assert not (home / "workspaces" / "usr_bob" / "evil.txt").exists()


async def _stop_while_running(sandbox: CommandSandbox, workspace: Path) -> tuple[list[int], ToolResult | None]:
    ctx = context(sandbox, workspace, "run_stoptest")
    outputs = ctx.emit_output
    assert isinstance(outputs, Outputs)
    command = "setsid sleep 300 & (trap '' TERM HUP; sleep 300) & sleep 300 & echo ready; wait"
    task = asyncio.create_task(default_registry().invoke("run_command", json.dumps({"command": command}), ctx))
    async with asyncio.timeout(10):
        while "ready" not in outputs.text:
            outputs.changed.clear()
            await outputs.changed.wait()
    pids = marked("run_stoptest")
    task.cancel()  # what Stop does to the tool call
    try:
        return pids, await task
    except asyncio.CancelledError:
        return pids, None


def test_stop_kills_everything_the_command_started_setsid_included(sandbox: CommandSandbox, home: Path) -> None:
    pids, _ = asyncio.run(_stop_while_running(sandbox, home / "workspaces" / "usr_alice"))
    assert len(pids) >= 5  # bwrap, its init, the shell, three sleepers (one of them in its own session)
    deadline = time.monotonic() + 5
    while marked("run_stoptest") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marked("run_stoptest") == []


def test_without_bubblewrap_one_user_runs_unsandboxed_with_a_warning_and_several_are_refused(home: Path) -> None:
    settings = settings_for(home, sandbox="auto", bwrap_path="/nonexistent/bwrap")
    sandbox = choose_sandbox(settings)
    alice = home / "workspaces" / "usr_alice"
    assert sandbox.name == "none" and sandbox.warning and "WITHOUT a sandbox" in sandbox.warning
    result = asyncio.run(run(sandbox, alice, "echo unsandboxed"))
    assert result.status == "ok" and "unsandboxed" in result.content
    sandbox.set_user_count(2)
    assert sandbox.name == "refused" and sandbox.warning and "disabled" in sandbox.warning
    result = asyncio.run(run(sandbox, alice, "echo unsandboxed"))
    assert result.status == "error" and REFUSED_MESSAGE in result.content
    multi = choose_sandbox(settings_for(home, sandbox="auto", bwrap_path="/nonexistent/bwrap", multi_user=True))
    assert multi.name == "refused"


def test_sandbox_bwrap_refuses_to_start_without_it(home: Path) -> None:
    from onward.errors import ConfigError

    with pytest.raises(ConfigError, match="bubblewrap"):
        choose_sandbox(settings_for(home, bwrap_path="/nonexistent/bwrap"))


def test_the_environment_keeps_the_run_marker_and_nothing_of_the_server(sandbox: CommandSandbox, home: Path) -> None:
    os.environ["ONWARD_SECRET_FOR_TEST"] = "server-secret"
    try:
        result = asyncio.run(run(sandbox, home / "workspaces" / "usr_alice", "env"))
    finally:
        del os.environ["ONWARD_SECRET_FOR_TEST"]
    assert f"{RUN_ID_VAR}=run_sandboxtest" in result.content
    assert "server-secret" not in result.content
