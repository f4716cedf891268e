"""run_command: one shell command, output streamed live, whole process group killed when it ends.

The command's own exit ends the call: anything it left running in the background is killed with
its process group, as on timeout or Stop, so a one-shot command never outlives its tool call (long
lived processes belong in terminal sessions). The kill happens in a `finally`, with no grace period,
which is what makes Stop prompt.
"""

from __future__ import annotations

import asyncio
import codecs
import signal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from onward.tools.base import ToolContext, ToolError, ToolResult
from onward.tools.output import HeadTail
from onward.tools.paths import resolve_in_workspace
from onward.tools.processes import start_command

# How long output may still arrive after the command exits and its group is killed. Only a
# process that escaped the group (setsid) can hold the pipes open that long.
DRAIN_TIMEOUT_S = 2.0


class _OutputSink:
    """Decodes both streams incrementally, streams them as events (bounded), keeps head and tail."""

    def __init__(self, ctx: ToolContext) -> None:
        settings = ctx.settings
        self._emit = ctx.emit_output
        self._piece = max(settings.event_text_limit, 1)
        self._stream_budget = settings.tool_stream_limit
        self._streamed = 0
        self._stream_stopped = False
        self.kept = HeadTail(settings.tool_output_limit)
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for name in ("stdout", "stderr")
        }

    def feed(self, stream: str, data: bytes) -> None:
        self._record(stream, self._decoders[stream].decode(data))

    def finish(self) -> None:
        for stream, decoder in self._decoders.items():
            self._record(stream, decoder.decode(b"", final=True))

    def _record(self, stream: str, text: str) -> None:
        if not text:
            return
        self.kept.append(text)
        if self._stream_stopped:
            return
        room = self._stream_budget - self._streamed
        shown = text[:room]
        for start in range(0, len(shown), self._piece):
            self._emit(stream, shown[start : start + self._piece])
        self._streamed += len(shown)
        if len(shown) < len(text):
            self._stream_stopped = True
            self._emit(
                stream,
                f"\n[live output stopped after {self._stream_budget} characters; the command keeps "
                "running and its result shows the beginning and end of the output]\n",
            )


def _exit_line(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"[killed by {name}]"
    return f"[exit code {returncode}]"


class RunCommandArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(
        min_length=1, description="The shell command line to run, e.g. 'pytest -q tests/'."
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="Seconds before the command is killed; defaults to the server's setting.",
    )
    cwd: str | None = Field(
        None,
        description="Directory to run in, relative to the workspace root; defaults to the root.",
    )


class RunCommand:
    name: ClassVar[str] = "run_command"
    description: ClassVar[str] = (
        "Run a shell command (/bin/sh -c) in the workspace and return its combined stdout and "
        "stderr followed by its exit code. stdin is empty, so interactive programs will not work. "
        "Background processes are killed when the command exits; long outputs are shortened to "
        "their beginning and end, so filter them (grep, head, tail) when you can."
    )

    Args: ClassVar[type[BaseModel]] = RunCommandArgs

    async def run(self, args: RunCommandArgs, ctx: ToolContext) -> ToolResult:
        settings = ctx.settings
        timeout_s = min(
            args.timeout_s or settings.command_timeout_s, settings.command_max_timeout_s
        )
        cwd = resolve_in_workspace(ctx.workspace, args.cwd or "")
        if not cwd.is_dir():
            raise ToolError(f"cwd {args.cwd!r} is not a directory in the workspace")
        argv, host_cwd = ctx.sandbox.command(args.command, ctx.workspace, cwd)
        sink = _OutputSink(ctx)
        try:
            process = await start_command(
                argv, host_cwd, run_id=ctx.run_id, workspace=ctx.workspace, on_output=sink.feed
            )
        except OSError as exc:
            raise ToolError(f"could not start the command: {exc.strerror or exc}") from exc

        notes: list[str] = []
        timed_out = False
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await process.wait_exit()
            except TimeoutError:
                timed_out = True
            # Whatever the command left running dies now; that also closes the pipes it held.
            process.kill()
            if not await process.drain(DRAIN_TIMEOUT_S):
                notes.append(
                    "[output pipes were still open after the command ended; a detached process may hold them]"
                )
        finally:
            await process.close()
        sink.finish()

        output = sink.kept.text() or "(no output)"
        if not output.endswith("\n"):
            output += "\n"
        if timed_out:
            notes.append(
                f"[timed out after {timeout_s:g} s; the command and everything it started were killed]"
            )
            return ToolResult.error(output + "\n".join(notes))
        returncode = process.returncode if process.returncode is not None else -signal.SIGKILL
        notes.append(_exit_line(returncode))
        content = output + "\n".join(notes)
        return ToolResult.ok(content) if returncode == 0 else ToolResult.error(content)
