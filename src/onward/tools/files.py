"""File tools: read (with line numbers, ranges and search), write, exact-replace edit, list.

Every path goes through `resolve_in_workspace`; file I/O runs in a thread. Output is shaped for a
model: line numbers it can quote back, errors that say what to do next, and bounds that say how to
see the rest instead of silently cutting.
"""

from __future__ import annotations

import asyncio
import heapq
import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from onward.tools.base import ToolContext, ToolError, ToolResult
from onward.tools.paths import resolve_in_workspace

_BINARY_SNIFF_BYTES = 8192
_QUERY_CONTEXT_LINES = 2


def _strerror(exc: OSError) -> str:
    # Never exc's str(): it holds the host path, which means nothing to the model.
    return exc.strerror or type(exc).__name__


def _existing_file(ctx: ToolContext, rel: str) -> Path:
    path = resolve_in_workspace(ctx.workspace, rel)
    if path.is_dir():
        raise ToolError(f"{rel!r} is a directory; use list_files to see what it contains")
    if not path.exists():
        raise ToolError(f"{rel!r} does not exist; use list_files to see which files there are")
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(number, text) of each line, split on '\\n' only so numbers match sed/grep; '\\r\\n' trimmed."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            yield number, raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace")


class ReadFileArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="File path relative to the workspace root.")
    start_line: int | None = Field(
        None, ge=1, description="First line to show (1-based, inclusive)."
    )
    end_line: int | None = Field(None, ge=1, description="Last line to show (1-based, inclusive).")
    query: str | None = Field(
        None,
        min_length=1,
        description="Only show lines containing this text (case-insensitive), with context.",
    )


class ReadFile:
    name: ClassVar[str] = "read_file"
    description: ClassVar[str] = (
        "Read a text file of the workspace. Lines are prefixed with their line numbers. Give "
        "start_line/end_line to read part of a large file, or query to see only the lines that "
        "contain a text (with a little context)."
    )

    Args: ClassVar[type[BaseModel]] = ReadFileArgs

    async def run(self, args: ReadFileArgs, ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(self._read, args, ctx)

    def _read(self, args: ReadFileArgs, ctx: ToolContext) -> ToolResult:
        path = _existing_file(ctx, args.path)
        start, end = args.start_line or 1, args.end_line
        if end is not None and end < start:
            raise ToolError(f"end_line {end} is before start_line {start}")
        try:
            with path.open("rb") as f:
                sniff = f.read(_BINARY_SNIFF_BYTES)
            if b"\0" in sniff:
                size = path.stat().st_size
                raise ToolError(
                    f"{args.path!r} looks like a binary file ({size} bytes); read_file shows text only. "
                    "Inspect it with run_command (e.g. `file`, `xxd | head`)."
                )
            if args.query is not None:
                return self._search(path, args, start, end, ctx.settings.file_read_limit)
            return self._range(path, args, start, end, ctx.settings.file_read_limit)
        except OSError as exc:
            raise ToolError(f"cannot read {args.path!r}: {_strerror(exc)}") from exc

    def _range(
        self, path: Path, args: ReadFileArgs, start: int, end: int | None, limit: int
    ) -> ToolResult:
        out: list[str] = []
        size = 0
        total = 0
        cut_after: int | None = None  # last line shown when the character limit stopped us
        for number, text in _lines(path):
            total = number
            if number < start or (end is not None and number > end) or cut_after is not None:
                continue
            line = f"{number:6}\t{text}"
            if size + len(line) + 1 > limit:
                if not out:  # a single line longer than the limit: show its beginning
                    out.append(line[:limit])
                    cut_after = number
                else:
                    cut_after = number - 1
                continue
            out.append(line)
            size += len(line) + 1
        if total == 0:
            return ToolResult.ok(f"({args.path} is empty)")
        if start > total:
            raise ToolError(
                f"start_line {start} is past the end of {args.path!r}, which has {total} lines"
            )
        last = min(end or total, total)
        if cut_after is not None:
            out.append(
                f"[output stopped at {limit} characters after line {cut_after} of {total}; "
                f"read the rest with start_line={cut_after + 1}]"
            )
        elif start > 1 or last < total:
            out.append(f"[lines {start}-{last} of {total}]")
        return ToolResult.ok("\n".join(out))

    def _search(
        self, path: Path, args: ReadFileArgs, start: int, end: int | None, limit: int
    ) -> ToolResult:
        assert args.query is not None
        needle = args.query.casefold()
        before: deque[tuple[int, str]] = deque(maxlen=_QUERY_CONTEXT_LINES)
        out: list[str] = []
        size = 0
        matches = 0
        last_shown = 0
        after_left = 0
        truncated = False
        for number, text in _lines(path):
            if number < start or (end is not None and number > end):
                continue
            is_match = needle in text.casefold()
            matches += is_match
            if truncated:
                continue
            if is_match:
                block = [*before, (number, text)]
                after_left = _QUERY_CONTEXT_LINES
            elif after_left:
                block = [(number, text)]
                after_left -= 1
            else:
                before.append((number, text))
                continue
            before.clear()
            for n, t in block:
                if last_shown and n > last_shown + 1:
                    out.append("--")
                line = f"{n}{':' if n == number and is_match else '-'}{t}"
                if size + len(line) + 1 > limit:
                    truncated = True
                    break
                out.append(line)
                size += len(line) + 1
                last_shown = n
        if matches == 0:
            return ToolResult.ok(f"no lines of {args.path!r} contain {args.query!r}")
        header = f"{matches} line(s) of {args.path!r} contain {args.query!r} (matches marked 'N:', context 'N-'):"
        if truncated:
            out.append(
                f"[output stopped at {limit} characters; narrow the query or give start_line/end_line]"
            )
        return ToolResult.ok("\n".join([header, *out]))


class WriteFileArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="File path relative to the workspace root.")
    content: str = Field(description="The complete new content of the file.")


class WriteFile:
    name: ClassVar[str] = "write_file"
    description: ClassVar[str] = (
        "Create or overwrite a file of the workspace with the given content (UTF-8). Missing "
        "parent directories are created. To change part of an existing file, prefer edit_file."
    )

    Args: ClassVar[type[BaseModel]] = WriteFileArgs

    async def run(self, args: WriteFileArgs, ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(self._write, args, ctx)

    def _write(self, args: WriteFileArgs, ctx: ToolContext) -> ToolResult:
        path = resolve_in_workspace(ctx.workspace, args.path)
        if path.is_dir():
            raise ToolError(f"{args.path!r} is a directory; give the path of a file")
        data = args.content.encode("utf-8")
        existed = path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise ToolError(f"cannot write {args.path!r}: {_strerror(exc)}") from exc
        return ToolResult.ok(
            f"{'overwrote' if existed else 'created'} {args.path} ({len(data)} bytes written)"
        )


class EditFileArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="File path relative to the workspace root.")
    old: str = Field(
        min_length=1, description="The exact text to replace; must occur exactly once."
    )
    new: str = Field(description="The replacement text (may be empty to delete).")


class EditFile:
    name: ClassVar[str] = "edit_file"
    description: ClassVar[str] = (
        "Replace one exact occurrence of `old` with `new` in a file of the workspace. `old` must "
        "match the file exactly (whitespace included) and occur exactly once; include surrounding "
        "lines to make it unique. Copy text from read_file without the line-number prefixes."
    )

    Args: ClassVar[type[BaseModel]] = EditFileArgs

    async def run(self, args: EditFileArgs, ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(self._edit, args, ctx)

    def _edit(self, args: EditFileArgs, ctx: ToolContext) -> ToolResult:
        path = _existing_file(ctx, args.path)
        if args.old == args.new:
            raise ToolError("old and new are identical; nothing to change")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolError(
                f"{args.path!r} is not UTF-8 text; rewrite it with write_file or run_command"
            ) from exc
        except OSError as exc:
            raise ToolError(f"cannot read {args.path!r}: {_strerror(exc)}") from exc
        old, new = args.old, args.new
        count = text.count(old)
        if count == 0 and "\r\n" in text and "\n" in old:
            # read_file shows CRLF files without their '\r'; match the file's line endings.
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
            count = text.count(old)
        if count == 0:
            raise ToolError(
                f"old text not found in {args.path!r}; read the file again and copy the exact text, "
                "whitespace and indentation included"
            )
        if count > 1:
            raise ToolError(
                f"old text found {count} times in {args.path!r}; add context (neighbouring lines) "
                "to old so that it matches exactly once"
            )
        index = text.index(old)
        try:
            path.write_bytes((text[:index] + new + text[index + len(old) :]).encode("utf-8"))
        except OSError as exc:
            raise ToolError(f"cannot write {args.path!r}: {_strerror(exc)}") from exc
        line = text.count("\n", 0, index) + 1
        return ToolResult.ok(f"edited {args.path}: replaced 1 occurrence at line {line}")


class ListFilesArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        ".", description="Directory relative to the workspace root; defaults to the root."
    )


class ListFiles:
    name: ClassVar[str] = "list_files"
    description: ClassVar[str] = (
        "List one directory of the workspace (not recursive), sorted by name: directories end "
        "with '/', files show their size."
    )

    Args: ClassVar[type[BaseModel]] = ListFilesArgs

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit

    async def run(self, args: ListFilesArgs, ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(self._list, args, ctx)

    def _list(self, args: ListFilesArgs, ctx: ToolContext) -> ToolResult:
        path = resolve_in_workspace(ctx.workspace, args.path)
        if not path.exists():
            raise ToolError(f"{args.path!r} does not exist")
        if not path.is_dir():
            raise ToolError(f"{args.path!r} is a file, not a directory; use read_file to read it")
        total = 0

        def counted(it: Iterator[os.DirEntry[str]]) -> Iterator[os.DirEntry[str]]:
            nonlocal total
            for entry in it:
                total += 1
                yield entry

        try:
            with os.scandir(path) as it:
                # nsmallest keeps memory bounded by the limit however large the directory is.
                entries = heapq.nsmallest(self.limit, counted(it), key=lambda e: e.name)
                lines = [_describe(e) for e in entries]
        except OSError as exc:
            raise ToolError(f"cannot list {args.path!r}: {_strerror(exc)}") from exc
        if not lines:
            return ToolResult.ok("(empty directory)")
        if total > len(lines):
            lines.append(
                f"[showing the first {len(lines)} of {total} entries; list a subdirectory or use "
                "run_command (e.g. `ls | grep ...`, `find -name ...`) to see the rest]"
            )
        return ToolResult.ok("\n".join(lines))


def _describe(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink():
            return f"{entry.name} -> {os.readlink(entry.path)}"
        if entry.is_dir():
            return f"{entry.name}/"
        return f"{entry.name} ({entry.stat().st_size} bytes)"
    except OSError:
        return f"{entry.name} (unreadable)"
