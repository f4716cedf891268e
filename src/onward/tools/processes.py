"""Spawning commands in their own process group, and killing whole groups.

Every command is a session leader (`start_new_session=True`), so one `killpg` reaches everything it
started short of a deliberate `setsid`. Every command also carries `ONWARD_RUN_ID` in its
environment: after a `kill -9` of the server nobody remembers the pids, and crash recovery finds
what a run left behind by scanning `/proc/*/environ` for that marker.

Exit is observed through `SubprocessProtocol.process_exited`, not `Process.wait()`: on some Python
versions the latter also waits for the pipes to close, which a background child (`sleep 60 &`)
holds open for as long as it lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

logger = logging.getLogger(__name__)

RUN_ID_VAR = "ONWARD_RUN_ID"
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_STREAMS = {1: "stdout", 2: "stderr"}


class NoSandbox:
    """Runs commands directly on the host with `/bin/sh -c`; only for single-user mode."""

    name = "none"

    def command(self, shell_command: str, workspace: Path, cwd: Path) -> tuple[list[str], Path]:
        return ["/bin/sh", "-c", shell_command], cwd


# How long close() waits for the pipes to reach end-of-file after the kill. Only a process that
# escaped the group (setsid, without the sandbox) can hold them longer.
PIPES_CLOSE_TIMEOUT_S = 1.0


def command_env(run_id: str, workspace: Path) -> dict[str, str]:
    """The whole environment of a command: nothing of the server's leaks in but PATH and LANG."""
    return {
        RUN_ID_VAR: run_id,
        "HOME": str(workspace),
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "TERM": "dumb",
        # Python children otherwise block-buffer a pipe and nothing streams until they exit.
        "PYTHONUNBUFFERED": "1",
    }


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid`; a group that is already gone is fine."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        logger.warning("not allowed to kill process group %d", pid)


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, on_output: Callable[[str, bytes], None]) -> None:
        self._on_output = on_output
        self._open_pipes = set(_STREAMS)
        self.exited = asyncio.Event()
        self.pipes_closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        self._on_output(_STREAMS[fd], bytes(data))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_pipes.discard(fd)
        if not self._open_pipes:
            self.pipes_closed.set()

    def process_exited(self) -> None:
        self.exited.set()


class CommandProcess:
    """A running command: its pid (also its process group id) and the events of its life."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.pid: int = transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()

    async def wait_exit(self) -> int:
        """Wait until the command's own process exits (its children may live on)."""
        await self._protocol.exited.wait()
        return cast(int, self._transport.get_returncode())

    async def drain(self, timeout_s: float) -> bool:
        """Wait until stdout and stderr reach end of file; False if they are still open."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._protocol.pipes_closed.wait()
        except TimeoutError:
            return False
        return True

    def kill(self) -> None:
        kill_group(self.pid)

    async def close(self, reap_timeout_s: float = 5.0) -> None:
        """Kill the group now, wait (bounded) until the process is reaped, release the pipes.

        Safe to call on every exit path, including while the caller is being cancelled.
        """
        self.kill()
        try:
            if not self._protocol.exited.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(reap_timeout_s):
                        await asyncio.shield(self._protocol.exited.wait())
                if not self._protocol.exited.is_set():
                    logger.warning(
                        "process %d not reaped %.1f s after SIGKILL", self.pid, reap_timeout_s
                    )
            # The rest of the group (and, under bubblewrap, the sandbox's pid namespace) dies
            # asynchronously. A process closes its pipes as it exits, so end-of-file on both
            # means every process still holding them is dead: only then may Stop report success.
            if not self._protocol.pipes_closed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(PIPES_CLOSE_TIMEOUT_S, reap_timeout_s)):
                        await asyncio.shield(self._protocol.pipes_closed.wait())
        finally:
            self._transport.close()


async def start_command(
    argv: Sequence[str],
    cwd: Path,
    *,
    run_id: str,
    workspace: Path,
    on_output: Callable[[str, bytes], None],
) -> CommandProcess:
    """Start `argv` in a new session with stdin from /dev/null; output goes to `on_output(stream, data)`.

    The caller must `close()` the returned process on every exit path. Raises OSError if the
    program cannot be started.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _Protocol(on_output),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=command_env(run_id, workspace),
        start_new_session=True,
    )
    return CommandProcess(transport, protocol)


def _run_id_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:  # gone, or another user's process
        return None
    prefix = RUN_ID_VAR.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode("utf-8", "replace")
    return None


def kill_orphans(run_ids: set[str]) -> list[int]:
    """SIGKILL the process group of every process whose environment names one of `run_ids`.

    Used by crash recovery: the server that started these commands is gone. Returns the pids found.
    Our own process (and its group) is never killed.
    """
    if not run_ids or not os.path.isdir("/proc"):
        return []
    own_pid, own_group = os.getpid(), os.getpgrp()
    killed: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own_pid:
            continue
        pid = int(entry)
        if _run_id_of(pid) not in run_ids:
            continue
        try:
            group = os.getpgid(pid)
            if group == own_group:
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            continue
        except PermissionError:
            logger.warning("not allowed to kill orphaned process %d", pid)
            continue
        killed.append(pid)
    if killed:
        logger.info(
            "killed orphaned command processes %s", killed, extra={"run_ids": sorted(run_ids)}
        )
    return killed
