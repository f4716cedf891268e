"""Server-Sent Events of an OpenAI-style stream: bytes cut on blank lines, `data:` decoded by orjson.

Works on whole network reads, not lines: a fast local model emits thousands of chunks a second
and under load one read holds many of them, so the cost per chunk is a split and a JSON decode.
"""

from __future__ import annotations

from typing import Any

import orjson


class BlockSplitter:
    """Cuts a byte stream into SSE blocks (one event each), whatever its line ends."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The blocks this chunk completes."""
        buf = self._buf + chunk
        if b"\r" not in buf:
            blocks = buf.split(b"\n\n")
            self._buf = blocks.pop()
            return blocks
        buf = buf.replace(b"\r\n", b"\n")
        held = b""
        if buf.endswith(b"\r"):  # maybe the first half of a CRLF: keep it for the next chunk
            buf, held = buf[:-1], b"\r"
        blocks = buf.replace(b"\r", b"\n").split(b"\n\n")
        self._buf = blocks.pop() + held
        return blocks

    def end(self) -> list[bytes]:
        """What is left when the body ends (a last event without its blank line)."""
        rest, self._buf = self._buf, b""
        return [rest] if rest.strip() else []


def parse_block(block: bytes) -> tuple[bytes, bytes] | None:
    if block.startswith(b"data: ") and b"\n" not in block:
        return b"", block[6:]  # the common case: one data line
    event = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip()
    if not data:
        return None
    return event, b"\n".join(data)


class StreamError(Exception):
    """The server reported an error inside the stream (an `{"error": …}` event)."""


def raise_reported_error(value: Any) -> None:
    """Raise StreamError if `value` is an `{"error": …}` object (a message, or an object with one)."""
    if isinstance(value, dict) and value.get("error"):
        error = value["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise StreamError(message if isinstance(message, str) and message else "the endpoint reported an error")


def decode(blocks: list[bytes]) -> tuple[list[Any], bool]:
    """The JSON values of complete SSE blocks, and whether `[DONE]` was among them."""
    values: list[Any] = []
    for block in blocks:
        parsed = parse_block(block)
        if parsed is None:
            continue
        data = parsed[1]
        if data.startswith(b"[DONE]"):
            return values, True
        value = orjson.loads(data)
        raise_reported_error(value)
        values.append(value)
    return values, False
