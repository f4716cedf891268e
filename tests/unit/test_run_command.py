"""run_command and the process helpers, with real shells: streaming, limits, timeout, Stop, orphans."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from onward.config import Settings
from onward.tools.base import ToolContext, ToolError, ToolResult
from onward.tools.processes import RUN_ID_VAR, NoSandbox, kill_orphans
from onward.tools.run_command import DRAIN_TIMEOUT_S, RunCommand, RunCommandArgs

# Two pids on their own lines: the shell ($$) and its background child ($!).
TWO_SLEEPERS = 'echo "pid $$"; sleep 60 & echo "pid $!"; sleep 60'


class Recorder:
    """A ToolContext.emit_output that records events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def __call__(self, stream: str, text: str) -> None:
        self.events.append((stream, text))
        self.changed.set()

    def text(self, stream: str | None = None) -> str:
        return "".join(t for s, t in self.events if stream is None or s == stream)

    async def wait_for(self, predicate: Callable[[str], bool], timeout_s: float = 10.0) -> str:
        async with asyncio.timeout(timeout_s):
            while not predicate(self.text()):
                self.changed.clear()
                await self.changed.wait()
        return self.text()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_ctx(tmp_path: Path, workspace: Path, recorder: Recorder) -> Callable[..., ToolContext]:
    def make(**settings: object) -> ToolContext:
        return ToolContext(
            run_id=f"run-{uuid.uuid4().hex}",
            call_id="call-1",
            user_id="user-1",
            workspace=workspace,
            settings=Settings(home=tmp_path, **settings),  # type: ignore[arg-type]
            sandbox=NoSandbox(),
            emit_output=recorder,
        )

    return make


async def run(ctx: ToolContext, command: str, **kwargs: object) -> ToolResult:
    return await RunCommand().run(RunCommandArgs(command=command, **kwargs), ctx)


def pids_in(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"^pid (\d+)$", text, re.MULTILINE)]


def is_dead(pid: int) -> bool:
    """Gone, or a zombie: killed, and waiting for a parent (perhaps a container's init) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def wait_dead(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(is_dead(p) for p in pids):
        assert time.monotonic() < deadline, f"still alive: {[p for p in pids if not is_dead(p)]}"
        await asyncio.sleep(0.01)


async def test_output_and_exit_code(
    make_ctx: Callable[..., ToolContext], recorder: Recorder
) -> None:
    result = await run(make_ctx(), "echo hello; echo oops >&2")
    assert result.status == "ok"
    assert "hello\n" in result.content and "oops\n" in result.content
    assert result.content.endswith("[exit code 0]")
    assert ("stdout", "hello\n") in recorder.events
    assert ("stderr", "oops\n") in recorder.events


async def test_nonzero_exit_is_an_error_result(make_ctx: Callable[..., ToolContext]) -> None:
    result = await run(make_ctx(), "echo failing; exit 3")
    assert result.status == "error"
    assert result.content == "failing\n[exit code 3]"


async def test_no_output(make_ctx: Callable[..., ToolContext]) -> None:
    result = await run(make_ctx(), "true")
    assert result == ToolResult.ok("(no output)\n[exit code 0]")


async def test_environment_marks_the_run_and_home(
    make_ctx: Callable[..., ToolContext], workspace: Path
) -> None:
    ctx = make_ctx()
    result = await run(ctx, f'echo "$HOME|${RUN_ID_VAR}|$TERM"; cat')  # cat: stdin is /dev/null
    assert result.content.startswith(f"{workspace}|{ctx.run_id}|dumb\n")
    assert result.status == "ok"


async def test_cwd_is_workspace_relative(
    make_ctx: Callable[..., ToolContext], workspace: Path
) -> None:
    (workspace / "sub").mkdir()
    result = await run(make_ctx(), "pwd", cwd="sub")
    assert result.content.startswith(f"{workspace / 'sub'}\n")
    default = await run(make_ctx(), "pwd")
    assert default.content.startswith(f"{workspace}\n")


async def test_output_streams_before_the_command_exits(
    make_ctx: Callable[..., ToolContext], recorder: Recorder
) -> None:
    task = asyncio.create_task(run(make_ctx(), "echo first; sleep 60; echo never"))
    try:
        await recorder.wait_for(lambda text: "first\n" in text)
        assert not task.done()
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "never" not in recorder.text()


async def test_multibyte_characters_split_across_reads_are_not_mangled(
    make_ctx: Callable[..., ToolContext], recorder: Recorder
) -> None:
    # "é" is \303\251; the sleep puts its two bytes into separate reads.
    result = await run(make_ctx(), r"printf '\303'; sleep 0.2; printf '\251\n'")
    assert recorder.text("stdout") == "é\n"
    assert result.content.startswith("é\n")


async def test_events_are_split_at_the_event_text_limit(
    make_ctx: Callable[..., ToolContext], recorder: Recorder
) -> None:
    await run(make_ctx(event_text_limit=10), "printf '%0100d' 0")
    assert recorder.text() == "0" * 100
    assert max(len(text) for _, text in recorder.events) <= 10
    assert len(recorder.events) >= 10


async def test_streaming_stops_at_the_stream_limit_but_output_is_drained(
    make_ctx: Callable[..., ToolContext], recorder: Recorder
) -> None:
    result = await run(make_ctx(tool_stream_limit=1000), "seq 1 20000")
    markers = [text for _, text in recorder.events if "live output stopped" in text]
    assert len(markers) == 1
    assert len(recorder.text()) - len(markers[0]) == 1000
    # The command was not blocked on a full pipe: it ran to the end.
    assert result.status == "ok"
    assert result.content.endswith("19999\n20000\n[exit code 0]")


async def test_long_output_keeps_head_and_tail(make_ctx: Callable[..., ToolContext]) -> None:
    result = await run(make_ctx(tool_output_limit=300), "seq 1 10000")
    output, exit_line = result.content.rsplit("\n", 1)
    assert exit_line == "[exit code 0]"
    assert len(output) <= 300
    assert output.startswith("1\n2\n3\n")
    assert output.endswith("9999\n10000")
    truncated = re.search(r"\[\.\.\. (\d+) characters truncated \.\.\.\]", output)
    assert truncated is not None
    full = len("".join(f"{i}\n" for i in range(1, 10001)))
    kept = len(output) + 1 - len(truncated.group(0)) - 2  # +1: the "\n" before exit_line
    assert int(truncated.group(1)) == full - kept


async def test_timeout_kills_the_whole_group(make_ctx: Callable[..., ToolContext]) -> None:
    started = time.monotonic()
    result = await run(make_ctx(), TWO_SLEEPERS, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert result.status == "error"
    assert "timed out after 0.5 s" in result.content
    pids = pids_in(result.content)
    assert len(pids) == 2
    await wait_dead(pids, timeout_s=1.0)


async def test_timeout_is_clamped_to_the_maximum(make_ctx: Callable[..., ToolContext]) -> None:
    result = await run(make_ctx(command_max_timeout_s=0.3), "sleep 60", timeout_s=1000)
    assert "timed out after 0.3 s" in result.content


async def test_background_children_do_not_outlive_the_command(
    make_ctx: Callable[..., ToolContext],
) -> None:
    started = time.monotonic()
    # The background sleep holds the output pipes open; the call must still end at once.
    result = await run(make_ctx(), 'sleep 60 & echo "pid $!"')
    assert time.monotonic() - started < DRAIN_TIMEOUT_S
    assert result.status == "ok"
    await wait_dead(pids_in(result.content), timeout_s=1.0)


async def test_cancel_kills_the_group_within_a_second(
    make_ctx: Callable[..., ToolContext], recorder: Recorder
) -> None:
    task = asyncio.create_task(run(make_ctx(), TWO_SLEEPERS))
    text = await recorder.wait_for(lambda text: len(pids_in(text)) == 2)
    pids = pids_in(text)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_dead(pids, timeout_s=1.0 - (time.monotonic() - cancelled_at))


async def test_bad_cwd_is_an_error(make_ctx: Callable[..., ToolContext], workspace: Path) -> None:
    (workspace / "file.txt").write_text("x")
    with pytest.raises(ToolError, match="not a directory"):
        await run(make_ctx(), "pwd", cwd="file.txt")
    with pytest.raises(ToolError, match="outside the workspace"):
        await run(make_ctx(), "pwd", cwd="..")


def test_kill_orphans_kills_marked_process_groups_only() -> None:
    run_id, other_id = f"orphan-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"

    def spawn(marker: str) -> subprocess.Popen[bytes]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), RUN_ID_VAR: marker}
        return subprocess.Popen(
            ["/bin/sh", "-c", "sleep 60 & wait"], env=env, start_new_session=True
        )

    target, bystander = spawn(run_id), spawn(other_id)
    try:
        assert target.pid in kill_orphans({run_id})
        assert target.wait(timeout=5) == -signal.SIGKILL
        # The shell's background sleep carried the marker too and died with its group.
        deadline = time.monotonic() + 5
        while kill_orphans({run_id}):
            assert time.monotonic() < deadline, "a marked process survived"
            time.sleep(0.01)
        assert bystander.poll() is None
        assert kill_orphans(set()) == []
    finally:
        for proc in (target, bystander):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
