"""The tool registry: what the model is offered, and the one place a tool call is executed.

`invoke` turns every expected problem (unknown tool, malformed JSON, invalid arguments, ToolError,
even a bug in a tool) into an error result the model can read and react to; only cancellation
propagates. Built-in tools are registered through the same `register` a third-party tool goes
through via the `onward.tools` entry-point group.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from importlib.metadata import entry_points
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from onward.tools.base import Tool, ToolContext, ToolError, ToolResult

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "onward.tools"
# What OpenAI-compatible APIs accept as a function name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._schemas: list[dict[str, Any]] | None = None

    def register(self, tool: Tool) -> None:
        """Add a tool instance. ValueError for a duplicate or malformed name or a missing Args model."""
        name = getattr(tool, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"tool name must match {_NAME.pattern}, got {name!r}")
        if name in self._tools:
            raise ValueError(f"a tool named {name!r} is already registered")
        args = getattr(tool, "Args", None)
        if not (inspect.isclass(args) and issubclass(args, BaseModel)):
            raise ValueError(f"tool {name!r} must have an Args pydantic model")
        if not inspect.iscoroutinefunction(getattr(tool, "run", None)):
            raise ValueError(f"tool {name!r} must have an async run(args, ctx) method")
        self._tools[name] = tool
        self._schemas = None

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI `tools` parameter for every registered tool, in registration order.

        Computed once per set of tools: pydantic's schema generation costs milliseconds, and
        every LLM call of every run asks for it."""
        if self._schemas is None:
            self._schemas = self._build_schemas()
        return self._schemas

    def _build_schemas(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": _clean_schema(tool.Args.model_json_schema()),
                },
            }
            for tool in self._tools.values()
        ]

    async def invoke(self, name: str, raw_arguments: str, ctx: ToolContext) -> ToolResult:
        """Run one tool call. Never raises for a bad call or a failing tool; CancelledError propagates."""
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return ToolResult.error(f"unknown tool {name!r}; the available tools are: {known}")
        try:
            data = json.loads(raw_arguments) if raw_arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return ToolResult.error(
                f"the arguments of {name} are not valid JSON ({exc.msg} at line {exc.lineno} column "
                f"{exc.colno}); call {name} again with its arguments as one valid JSON object"
            )
        if not isinstance(data, dict):
            return ToolResult.error(
                f"the arguments of {name} must be a JSON object, not {type(data).__name__}; "
                f'call {name} again with an object such as {{"name": value}}'
            )
        try:
            args = tool.Args.model_validate(data)
        except ValidationError as exc:
            return ToolResult.error(f"invalid arguments for {name}:\n{_describe_errors(exc)}")
        try:
            result = await tool.run(args, ctx)
        except ToolError as exc:
            return ToolResult.error(str(exc) or f"{name} failed")
        except Exception as exc:
            logger.exception(
                "tool %s failed",
                name,
                extra={"run_id": ctx.run_id, "call_id": ctx.call_id, "tool": name},
            )
            return ToolResult.error(f"internal error in tool {name}: {type(exc).__name__}: {exc}")
        if not isinstance(result, ToolResult):
            logger.error("tool %s returned %r instead of a ToolResult", name, type(result))
            return ToolResult.error(f"internal error in tool {name}: it returned no result")
        return result


def _describe_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        lines.append(f"- {where}: {error['msg']}")
    return "\n".join(lines)


def _clean_schema(schema: Any) -> Any:
    """Drop pydantic's generated titles and spell `X | None = None` as a plain optional X.

    Titles only cost tokens, and some OpenAI-compatible servers choke on `anyOf` with null.
    """
    if isinstance(schema, list):
        return [_clean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            # Keys here are names (a property may well be called "title"), not schema keywords.
            cleaned[key] = {name: _clean_schema(sub) for name, sub in value.items()}
        else:
            cleaned[key] = _clean_schema(value)
    variants = cleaned.get("anyOf")
    if isinstance(variants, list) and len(variants) == 2 and {"type": "null"} in variants:
        other = next(v for v in variants if v != {"type": "null"})
        if isinstance(other, dict):
            del cleaned["anyOf"]
            cleaned = {**other, **cleaned}
            if cleaned.get("default", ...) is None:
                del cleaned["default"]
    return cleaned


def default_registry() -> ToolRegistry:
    """The built-in tools, then every tool of the `onward.tools` entry-point group that loads.

    An entry point names a tool class (instantiated without arguments) or a tool instance.
    """
    from onward.tools.files import EditFile, ListFiles, ReadFile, WriteFile
    from onward.tools.run_command import RunCommand

    registry = ToolRegistry()
    for tool in (RunCommand(), ReadFile(), WriteFile(), EditFile(), ListFiles()):
        registry.register(tool)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            registry.register(cast(Tool, loaded() if inspect.isclass(loaded) else loaded))
        except Exception:
            logger.exception("skipping tool entry point %r (%s)", ep.name, ep.value)
    return registry
