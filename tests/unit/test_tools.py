"""The registry (schemas, invoke's error results, entry points) and the file tools on real files."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, Field

from onward.config import Settings
from onward.tools.base import ToolContext, ToolError, ToolResult
from onward.tools.files import ListFiles
from onward.tools.output import HeadTail, truncate_middle
from onward.tools.processes import NoSandbox
from onward.tools.registry import ToolRegistry, default_registry

BUILTINS = ["run_command", "read_file", "write_file", "edit_file", "list_files"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def outputs() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def ctx(tmp_path: Path, workspace: Path, outputs: list[tuple[str, str]]) -> ToolContext:
    return ToolContext(
        run_id=f"run-{uuid.uuid4().hex}",
        call_id="call-1",
        user_id="user-1",
        workspace=workspace,
        settings=Settings(home=tmp_path),
        sandbox=NoSandbox(),
        emit_output=lambda stream, text: outputs.append((stream, text)),
    )


@pytest.fixture
def registry() -> ToolRegistry:
    return default_registry()


async def call(registry: ToolRegistry, ctx: ToolContext, name: str, **args: Any) -> ToolResult:
    return await registry.invoke(name, json.dumps(args), ctx)


# --- registry -----------------------------------------------------------------------------------


class EchoArgs(BaseModel):
    title: str = Field(description="A property that happens to be called title.")
    times: int | None = Field(None, ge=1, description="How often.")


class Echo:
    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "Echo the title."
    Args: ClassVar[type[BaseModel]] = EchoArgs

    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour

    async def run(self, args: EchoArgs, ctx: ToolContext) -> ToolResult:
        if self.behaviour == "tool-error":
            raise ToolError("the echo chamber is closed")
        if self.behaviour == "bug":
            raise KeyError("oops")
        if self.behaviour == "cancel":
            raise asyncio.CancelledError
        return ToolResult.ok(args.title * (args.times or 1))


def registry_with(tool: Echo) -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(tool)
    return registry


def test_default_registry_has_the_builtins(registry: ToolRegistry) -> None:
    assert registry.names()[:5] == BUILTINS
    assert [s["function"]["name"] for s in registry.schemas()][:5] == BUILTINS


def test_duplicate_and_malformed_registrations_are_rejected() -> None:
    registry = registry_with(Echo())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Echo())

    class BadName(Echo):
        name: ClassVar[str] = "no spaces allowed"

    with pytest.raises(ValueError, match="name"):
        registry.register(BadName())
    assert registry.names() == ["echo"]
    assert registry.get("echo") is not None and registry.get("nope") is None


def test_schema_is_openai_shaped_without_titles() -> None:
    [schema] = registry_with(Echo()).schemas()
    assert schema == {
        "type": "function",
        "function": {
            "name": "echo",
            "description": "Echo the title.",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {
                        "type": "string",
                        "description": "A property that happens to be called title.",
                    },
                    "times": {"type": "integer", "minimum": 1, "description": "How often."},
                },
                "required": ["title"],
            },
        },
    }


def test_builtin_schemas_have_no_titles_and_forbid_extra_arguments(registry: ToolRegistry) -> None:
    for schema in registry.schemas():
        assert '"title"' not in json.dumps(schema)
        params = schema["function"]["parameters"]
        assert params["additionalProperties"] is False
        assert all(prop.get("description") for prop in params["properties"].values())


async def test_valid_call(ctx: ToolContext) -> None:
    result = await registry_with(Echo()).invoke("echo", '{"title": "ab", "times": 2}', ctx)
    assert result == ToolResult.ok("abab")


async def test_unknown_tool_names_the_known_ones(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.invoke("delete_everything", "{}", ctx)
    assert result.status == "error"
    assert "unknown tool 'delete_everything'" in result.content
    assert all(name in result.content for name in BUILTINS)


async def test_invalid_json_asks_for_a_retry(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.invoke("read_file", '{"path": "a.txt"', ctx)
    assert result.status == "error"
    assert "not valid JSON" in result.content
    assert "line 1 column" in result.content
    assert "call read_file again" in result.content


async def test_json_that_is_not_an_object(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.invoke("read_file", '["a.txt"]', ctx)
    assert result.status == "error"
    assert "must be a JSON object, not list" in result.content


async def test_validation_errors_are_listed(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.invoke("read_file", '{"start_line": 0, "lines": "1-5"}', ctx)
    assert result.status == "error"
    assert result.content.startswith("invalid arguments for read_file:")
    assert "- path: Field required" in result.content
    assert "- start_line: Input should be greater than or equal to 1" in result.content
    assert "- lines: Extra inputs are not permitted" in result.content


async def test_empty_arguments_mean_an_empty_object(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "a.txt").write_text("")
    result = await default_registry().invoke("list_files", "", ctx)
    assert result == ToolResult.ok("a.txt (0 bytes)")


async def test_tool_error_becomes_an_error_result(ctx: ToolContext) -> None:
    result = await registry_with(Echo("tool-error")).invoke("echo", '{"title": "x"}', ctx)
    assert result == ToolResult.error("the echo chamber is closed")


async def test_a_bug_in_a_tool_is_an_internal_error_result(
    ctx: ToolContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="onward.tools.registry"):
        result = await registry_with(Echo("bug")).invoke("echo", '{"title": "x"}', ctx)
    assert result.status == "error"
    assert result.content.startswith("internal error in tool echo: KeyError")
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is KeyError


async def test_cancellation_propagates(ctx: ToolContext) -> None:
    with pytest.raises(asyncio.CancelledError):
        await registry_with(Echo("cancel")).invoke("echo", '{"title": "x"}', ctx)


def test_entry_point_tools_are_loaded_and_broken_ones_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "plugins"
    dist = plugins / "onward_fake_tools-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: onward-fake-tools\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[onward.tools]\n"
        "shout = onward_fake_tools:Shout\n"
        "broken = onward_fake_tools:DoesNotExist\n"
        "clash = onward_fake_tools:Clash\n"
    )
    (plugins / "onward_fake_tools.py").write_text(
        "from pydantic import BaseModel\n"
        "from onward.tools.base import ToolResult\n"
        "class Args(BaseModel):\n"
        "    text: str\n"
        "class Shout:\n"
        "    name = 'shout'\n"
        "    description = 'Shout.'\n"
        "    Args = Args\n"
        "    async def run(self, args, ctx):\n"
        "        return ToolResult.ok(args.text.upper())\n"
        "class Clash(Shout):\n"
        "    name = 'read_file'\n"
    )
    monkeypatch.syspath_prepend(str(plugins))
    with caplog.at_level(logging.ERROR, logger="onward.tools.registry"):
        registry = default_registry()
    assert registry.names() == [*BUILTINS, "shout"]
    skipped = {record.args[0] for record in caplog.records if isinstance(record.args, tuple)}
    assert skipped == {"broken", "clash"}


# --- output -------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [60, 61, 100, 999])
def test_truncate_middle_and_head_tail_agree(limit: int) -> None:
    text = "".join(f"line {i}\n" for i in range(300))
    expected = truncate_middle(text, limit)
    assert len(expected) <= limit
    assert expected.startswith("line 0") and expected.endswith("line 299\n")
    assert "characters truncated" in expected
    kept = HeadTail(limit)
    for i in range(0, len(text), 7):
        kept.append(text[i : i + 7])
    assert kept.text() == expected
    assert truncate_middle("short", limit) == "short"


# --- path escapes through the tools -------------------------------------------------------------


async def test_symlink_made_by_a_command_cannot_be_followed(
    registry: ToolRegistry, ctx: ToolContext, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("top secret\n")
    made = await call(registry, ctx, "run_command", command="ln -s .. up && ln -s ../secret.txt s")
    assert made.status == "ok", made.content
    for name, args in [
        ("read_file", {"path": "up/secret.txt"}),
        ("read_file", {"path": "s"}),
        ("write_file", {"path": "up/evil.txt", "content": "x"}),
        ("edit_file", {"path": "s", "old": "top", "new": "bottom"}),
        ("list_files", {"path": "up"}),
        ("run_command", {"command": "ls", "cwd": "up"}),
    ]:
        result = await call(registry, ctx, name, **args)
        assert result.status == "error", (name, args)
        assert "outside the workspace" in result.content
        assert "top secret" not in result.content
    assert not (tmp_path / "evil.txt").exists()
    assert (tmp_path / "secret.txt").read_text() == "top secret\n"


async def test_dangling_symlink_cannot_be_written_through(
    registry: ToolRegistry, ctx: ToolContext, tmp_path: Path, workspace: Path
) -> None:
    (workspace / "later").symlink_to(tmp_path / "created-outside.txt")
    result = await call(registry, ctx, "write_file", path="later", content="x")
    assert result.status == "error" and "outside the workspace" in result.content
    assert not (tmp_path / "created-outside.txt").exists()


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.txt", "a/../../secret.txt"])
async def test_escaping_paths_are_error_results(
    registry: ToolRegistry, ctx: ToolContext, path: str
) -> None:
    result = await call(registry, ctx, "read_file", path=path)
    assert result.status == "error"
    assert "relative to the workspace" in result.content


# --- read_file ----------------------------------------------------------------------------------


@pytest.fixture
def numbered(workspace: Path) -> Path:
    path = workspace / "numbers.txt"
    path.write_text("".join(f"row {i}\n" for i in range(1, 21)))
    return path


async def test_read_whole_file_with_line_numbers(
    registry: ToolRegistry, ctx: ToolContext, numbered: Path
) -> None:
    result = await call(registry, ctx, "read_file", path="numbers.txt")
    lines = result.content.split("\n")
    assert lines[0] == "     1\trow 1"
    assert lines[-1] == "    20\trow 20"
    assert len(lines) == 20


async def test_read_line_range(registry: ToolRegistry, ctx: ToolContext, numbered: Path) -> None:
    result = await call(registry, ctx, "read_file", path="numbers.txt", start_line=5, end_line=7)
    assert result.content == "     5\trow 5\n     6\trow 6\n     7\trow 7\n[lines 5-7 of 20]"
    tail = await call(registry, ctx, "read_file", path="numbers.txt", start_line=19, end_line=99)
    assert tail.content == "    19\trow 19\n    20\trow 20\n[lines 19-20 of 20]"
    past = await call(registry, ctx, "read_file", path="numbers.txt", start_line=21)
    assert past.status == "error" and "has 20 lines" in past.content
    backwards = await call(registry, ctx, "read_file", path="numbers.txt", start_line=5, end_line=4)
    assert backwards.status == "error"


async def test_read_query_shows_matches_with_context(
    registry: ToolRegistry, ctx: ToolContext, numbered: Path
) -> None:
    result = await call(registry, ctx, "read_file", path="numbers.txt", query="ROW 1")
    lines = result.content.split("\n")
    assert lines[0].startswith("11 line(s)")  # row 1, row 10..19
    assert lines[1:5] == ["1:row 1", "2-row 2", "3-row 3", "--"]
    assert lines[5:8] == ["8-row 8", "9-row 9", "10:row 10"]
    assert lines[-2:] == ["19:row 19", "20-row 20"]
    none = await call(registry, ctx, "read_file", path="numbers.txt", query="nothing")
    assert none == ToolResult.ok("no lines of 'numbers.txt' contain 'nothing'")


async def test_read_query_within_a_range(
    registry: ToolRegistry, ctx: ToolContext, numbered: Path
) -> None:
    result = await call(
        registry, ctx, "read_file", path="numbers.txt", query="row 1", start_line=12, end_line=13
    )
    assert result.content.split("\n")[1:] == ["12:row 12", "13:row 13"]


async def test_read_limit_says_how_to_continue(
    tmp_path: Path, workspace: Path, ctx: ToolContext, numbered: Path
) -> None:
    ctx.settings = Settings(home=tmp_path, file_read_limit=60)
    result = await default_registry().invoke("read_file", '{"path": "numbers.txt"}', ctx)
    assert len(result.content.split("\n[")[0]) <= 60
    assert result.content.endswith("after line 4 of 20; read the rest with start_line=5]")


async def test_binary_files_are_refused(
    registry: ToolRegistry, ctx: ToolContext, workspace: Path
) -> None:
    (workspace / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = await call(registry, ctx, "read_file", path="image.png")
    assert result.status == "error" and "binary" in result.content


async def test_read_missing_file_and_directory(
    registry: ToolRegistry, ctx: ToolContext, workspace: Path
) -> None:
    (workspace / "dir").mkdir()
    missing = await call(registry, ctx, "read_file", path="nope.txt")
    assert missing.status == "error" and "does not exist" in missing.content
    assert str(workspace) not in missing.content
    directory = await call(registry, ctx, "read_file", path="dir")
    assert directory.status == "error" and "list_files" in directory.content


# --- write_file / edit_file ---------------------------------------------------------------------


async def test_write_creates_parents_and_reports_bytes(
    registry: ToolRegistry, ctx: ToolContext, workspace: Path
) -> None:
    result = await call(registry, ctx, "write_file", path="deep/er/note.txt", content="héllo\n")
    assert result == ToolResult.ok("created deep/er/note.txt (7 bytes written)")
    assert (workspace / "deep" / "er" / "note.txt").read_text() == "héllo\n"
    again = await call(registry, ctx, "write_file", path="deep/er/note.txt", content="")
    assert again.content.startswith("overwrote")
    assert (workspace / "deep" / "er" / "note.txt").read_bytes() == b""


async def test_edit_replaces_exactly_one_occurrence(
    registry: ToolRegistry, ctx: ToolContext, workspace: Path
) -> None:
    (workspace / "code.py").write_text("a = 1\nb = 2\nc = 1\n")
    result = await call(registry, ctx, "edit_file", path="code.py", old="b = 2", new="b = 3")
    assert result == ToolResult.ok("edited code.py: replaced 1 occurrence at line 2")
    assert (workspace / "code.py").read_text() == "a = 1\nb = 3\nc = 1\n"


async def test_edit_not_found_and_ambiguous(
    registry: ToolRegistry, ctx: ToolContext, workspace: Path
) -> None:
    (workspace / "code.py").write_text("a = 1\nb = 2\nc = 1\n")
    missing = await call(registry, ctx, "edit_file", path="code.py", old="d = 4", new="d = 5")
    assert missing.status == "error" and "not found" in missing.content
    ambiguous = await call(registry, ctx, "edit_file", path="code.py", old=" = 1", new=" = 0")
    assert ambiguous.status == "error"
    assert "found 2 times" in ambiguous.content and "context" in ambiguous.content
    assert (workspace / "code.py").read_text() == "a = 1\nb = 2\nc = 1\n"


async def test_edit_keeps_crlf_line_endings(
    registry: ToolRegistry, ctx: ToolContext, workspace: Path
) -> None:
    (workspace / "win.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    result = await call(registry, ctx, "edit_file", path="win.txt", old="one\ntwo", new="1\n2")
    assert result.status == "ok", result.content
    assert (workspace / "win.txt").read_bytes() == b"1\r\n2\r\nthree\r\n"


# --- list_files ---------------------------------------------------------------------------------


async def test_list_files_sorted_with_sizes(
    registry: ToolRegistry, ctx: ToolContext, workspace: Path
) -> None:
    (workspace / "src").mkdir()
    (workspace / "src" / "inner.py").write_text("x")
    (workspace / "b.txt").write_text("12345")
    (workspace / "a.txt").write_text("")
    result = await call(registry, ctx, "list_files")
    assert result.content == "a.txt (0 bytes)\nb.txt (5 bytes)\nsrc/"
    inner = await call(registry, ctx, "list_files", path="src")
    assert inner.content == "inner.py (1 bytes)"
    empty = await call(registry, ctx, "list_files", path="src/..")
    assert empty.content == result.content


async def test_list_files_is_capped(ctx: ToolContext, workspace: Path) -> None:
    for i in range(7):
        (workspace / f"f{i}").write_text("")
    registry = ToolRegistry()
    registry.register(ListFiles(limit=3))
    result = await registry.invoke("list_files", "{}", ctx)
    assert result.content.split("\n")[:3] == ["f0 (0 bytes)", "f1 (0 bytes)", "f2 (0 bytes)"]
    assert "showing the first 3 of 7 entries" in result.content
