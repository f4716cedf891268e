"""Terminal rendering of a run: one reducer, `RunRenderer.handle(event)`, for live and replayed events.

The design decision: output is append-only text written as events arrive (no Live regions, no
cursor movement), so the same code streams to a terminal in colour and to a pipe or a test as
plain text, and a replay from seq 0 prints exactly what the live run printed. Events at or below
the last seq handled are ignored, which makes re-delivery harmless; unknown types are ignored.

Layout: assistant text as it streams; reasoning dimmed; each tool call a block —
`▶ name key=value …`, its output prefixed `│ ` (stderr in red), then a status line
(`✓ ok` green, `✗ error` red, `⊘ cancelled` / `⊘ interrupted` yellow, with the result's content
when no output was streamed or the call did not succeed); last, the run's terminal status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

_TERMINAL_STATUS = {
    "run.completed": "completed",
    "run.cancelled": "cancelled",
    "run.failed": "failed",
    "run.interrupted": "interrupted",
}
_TOOL_STATUS = {
    "ok": ("✓", "green"),
    "error": ("✗", "red"),
    "cancelled": ("⊘", "yellow"),
    "interrupted": ("⊘", "yellow"),
}
_RUN_STATUS_STYLE = {
    "completed": ("✓", "bold green"),
    "failed": ("✗", "bold red"),
    "cancelled": ("■", "bold yellow"),
    "interrupted": ("■", "bold yellow"),
}
_PREFIX = "│ "
_BLOCK_LINES = 20  # lines of a tool result shown when its output was not streamed
_INLINE_CHARS = 160
_ARG_CHARS = 120


@dataclass
class _Call:
    name: str
    streamed: bool = False


@dataclass
class _State:
    section: tuple[str, str] | None = None  # ("text" | "reasoning" | "tool", id)
    at_line_start: bool = True
    calls: dict[str, _Call] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)  # tool calls whose writing was shown
    messages_with_text: set[str] = field(default_factory=set)


class RunRenderer:
    """Turns a run's events into terminal output. Feed every event to `handle`, in seq order."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.last_seq = 0
        self.status: str | None = None  # the run's terminal status, once its terminal event came
        self.error: str | None = None
        self._s = _State()

    @property
    def finished(self) -> bool:
        return self.status is not None

    def handle(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return
            self.last_seq = seq
        if self.finished:
            return
        data = event.get("data") or {}
        kind = event.get("type")
        if kind == "message.delta":
            self._text(str(data.get("message_id", "")), str(data.get("text", "")))
        elif kind == "reasoning.delta":
            self._enter(("reasoning", str(data.get("message_id", ""))))
            self._write(str(data.get("text", "")), "dim italic")
        elif kind == "message.completed":
            mid = str(data.get("message_id", ""))
            content = data.get("content")
            if mid not in self._s.messages_with_text and isinstance(content, str) and content:
                self._text(mid, content)
        elif kind == "tool.call.delta":
            self._tool_call_delta(data)
        elif kind == "tool.started":
            self._tool_started(data)
        elif kind == "tool.output":
            self._tool_output(data)
        elif kind == "tool.completed":
            self._tool_completed(data)
        elif isinstance(kind, str) and kind in _TERMINAL_STATUS:
            status = _TERMINAL_STATUS[kind]
            detail = data.get("error") if kind == "run.failed" else data.get("reason")
            self.finish(status, detail if isinstance(detail, str) else None, data.get("usage"))

    def finish(self, status: str, detail: str | None = None, usage: Any = None) -> None:
        """Print the run's final line; also used when a run ended before we attached to it."""
        if self.finished:
            return
        self.status = status
        if status == "failed":
            self.error = detail
        symbol, style = _RUN_STATUS_STYLE.get(status, ("•", "bold"))
        line = f"{symbol} run {status}"
        if detail and not (status == "cancelled" and detail == "cancelled by user"):
            line += f": {detail}"
        self._enter(None)
        self._write(line, style)
        tokens = _usage(usage)
        if tokens:
            self._write(f"  ({tokens})", "dim")
        self._write("\n")

    def note(self, text: str, style: str | None = None) -> None:
        """A line of our own (hints, ids) between the run's output, on a line of its own."""
        self._newline()
        self._write(text + "\n", style)

    # -- sections ------------------------------------------------------------------------------

    def _text(self, message_id: str, text: str) -> None:
        if not text:
            return
        self._s.messages_with_text.add(message_id)
        self._enter(("text", message_id))
        self._write(text)

    def _tool_call_delta(self, data: dict[str, Any]) -> None:
        call_id = str(data.get("call_id", ""))
        if call_id in self._s.announced or call_id in self._s.calls:
            return
        self._s.announced.add(call_id)
        self._enter(("tool", call_id))
        self._write(f"✎ {data.get('name') or 'tool'}…\n", "dim")

    def _tool_started(self, data: dict[str, Any]) -> None:
        call_id = str(data.get("call_id", ""))
        name = str(data.get("name") or "tool")
        self._s.calls[call_id] = _Call(name=name)
        self._s.section = None  # the header always starts a new block
        self._enter(("tool", call_id))
        self._write("▶ ", "cyan")
        self._write(name, "bold cyan")
        args = _format_arguments(data.get("arguments"))
        if args:
            self._write(f" {args}", "cyan")
        self._write("\n")

    def _tool_output(self, data: dict[str, Any]) -> None:
        call_id = str(data.get("call_id", ""))
        call = self._s.calls.setdefault(call_id, _Call(name="tool"))
        text = str(data.get("text", ""))
        if not text:
            return
        if self._s.section != ("tool", call_id):  # another call's output came in between
            self._enter(("tool", call_id))
            self._write(f"┆ {call.name}\n", "dim")
        call.streamed = True
        style = "red" if data.get("stream") == "stderr" else None
        for piece in text.splitlines(keepends=True):
            if self._s.at_line_start:
                self._write(_PREFIX, "dim")
            self._write(piece, style)

    def _tool_completed(self, data: dict[str, Any]) -> None:
        call_id = str(data.get("call_id", ""))
        call = self._s.calls.get(call_id) or _Call(name="tool")
        status = str(data.get("status", "ok"))
        symbol, style = _TOOL_STATUS.get(status, ("•", "bold"))
        content = data.get("content")
        text = content.strip() if isinstance(content, str) else ""
        if self._s.section != ("tool", call_id):
            self._enter(("tool", call_id))
            self._write(f"┆ {call.name}\n", "dim")
        self._newline()
        inline = ""
        if text and call.streamed and status != "ok":
            inline = _last_line(text)  # the output is on screen; its conclusion is enough
        elif text and not call.streamed:
            if "\n" not in text and len(text) <= _INLINE_CHARS:
                inline = text
            else:
                self._block(text, None if status == "ok" else style)
        self._write(f"{symbol} {status}", style)
        if inline:
            self._write(f": {inline}", None if status == "ok" else style)
        self._write("\n")
        self._s.section = None

    def _block(self, text: str, style: str | None) -> None:
        lines = text.splitlines()
        shown = lines[:_BLOCK_LINES]
        for line in shown:
            self._write(_PREFIX, "dim")
            self._write(line + "\n", style or "dim")
        if len(lines) > len(shown):
            self._write(f"{_PREFIX}… {len(lines) - len(shown)} more lines\n", "dim")

    # -- low level -----------------------------------------------------------------------------

    def _enter(self, section: tuple[str, str] | None) -> None:
        if section != self._s.section or section is None:
            self._newline()
        self._s.section = section

    def _newline(self) -> None:
        if not self._s.at_line_start:
            self._write("\n")

    def _write(self, text: str, style: str | None = None) -> None:
        if not text:
            return
        self.console.out(text, style=style, highlight=False, end="")
        self._s.at_line_start = text.endswith("\n")


def _format_arguments(arguments: Any) -> str:
    """Tool arguments as `key=value …`, each value shortened to one line."""
    value: Any = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return _shorten(arguments, _ARG_CHARS)
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            shown = (
                json.dumps(item, ensure_ascii=False)
                if not isinstance(item, int | float)
                else str(item)
            )
            parts.append(f"{key}={_shorten(shown, _ARG_CHARS)}")
        return " ".join(parts)
    return _shorten(json.dumps(value, ensure_ascii=False), _ARG_CHARS)


def _shorten(text: str, limit: int) -> str:
    text = text.replace("\r", "").replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return _shorten(lines[-1].strip(), _INLINE_CHARS) if lines else ""


def _usage(usage: Any) -> str:
    if not isinstance(usage, dict):
        return ""
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return f"{prompt} in · {completion} out tokens"
    total = usage.get("total_tokens")
    return f"{total} tokens" if isinstance(total, int) else ""
