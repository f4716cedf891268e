"""What a tool is and what it gets to work with. Built-in tools use exactly this interface.

A tool validates its arguments with a pydantic model, does its work inside the user's workspace,
and returns a ToolResult. Expected failures (bad path, missing file, non-zero exit) are results with
status "error", never exceptions: the model reads them and carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from onward.config import Settings

ToolStatus = Literal["ok", "error"]


@dataclass(frozen=True, slots=True)
class ToolResult:
    status: ToolStatus
    content: str

    @classmethod
    def ok(cls, content: str) -> ToolResult:
        return cls("ok", content)

    @classmethod
    def error(cls, content: str) -> ToolResult:
        return cls("error", content)


class ToolError(Exception):
    """Raised inside a tool for an expected failure; the registry turns it into an error result."""


class Sandbox(Protocol):
    """How a command is spawned. The core ships an unsandboxed one; bubblewrap plugs in here."""

    name: str

    def command(self, shell_command: str, workspace: Path, cwd: Path) -> tuple[list[str], Path]:
        """argv to execute and the host directory to start it in."""
        ...


@dataclass(slots=True)
class ToolContext:
    run_id: str
    call_id: str
    user_id: str
    workspace: Path
    settings: Settings
    sandbox: Sandbox
    # Records a tool.output event (stream is "stdout", "stderr" or "terminal"); cheap, batched.
    emit_output: Callable[[str, str], None]


class Tool(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[BaseModel]]

    async def run(self, args: Any, ctx: ToolContext) -> ToolResult: ...
