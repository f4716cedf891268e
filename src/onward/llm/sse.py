"""A fast reader of an OpenAI-style SSE response, plugged into the SDK as its stream class.

The SDK still builds, authenticates and sends the request and maps HTTP errors; only the parsing
of the stream body is ours: bytes split on blank lines, `data:` payloads decoded with orjson. The
SDK's line-by-line decoder and model construction cost more per chunk than the rest of a run's
path together, and a fast local model can emit thousands of chunks per second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from openai import APIConnectionError, APIError, APITimeoutError, AsyncStream


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


class FastStream(AsyncStream[object]):
    """The SDK's AsyncStream with our parser: each chunk a plain JSON value.

    `batches()` hands over the chunks of one network read together, so the provider handles a
    read in one step: under load a read holds many chunks, and each async layer between the
    socket and the engine costs a suspension per item it passes on.
    """

    async def __stream__(self) -> AsyncIterator[Any]:
        async for values in self.batches():
            for value in values:
                yield value

    async def batches(self) -> AsyncIterator[list[Any]]:
        """The `data:` values of each network read, decoded, until `[DONE]` or the body's end."""
        response = self.response
        splitter = BlockSplitter()
        reads = self._bytes()
        try:
            async for chunk in reads:
                values, done = _decode(splitter.feed(chunk), response)
                if values:
                    yield values
                if done:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1):  # finish the body so the connection is reused
                            async for _ in reads:
                                pass
                    return
            values, _done = _decode(splitter.end(), response)
            if values:
                yield values
        finally:
            await response.aclose()

    async def _bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives: straight from aiohttp's reader when the SDK's aiohttp transport
        is in use (two wrappers fewer per read), else through the httpx-style response."""
        raw = _aiohttp_reader(self.response)
        source = raw.iter_any() if raw is not None else self.response.aiter_bytes()
        try:
            async for chunk in source:
                yield chunk
        except APIError:
            raise
        except Exception as err:  # the transport's own exception types vary across SDK versions
            if "timeout" in type(err).__name__.lower():
                raise APITimeoutError(request=self.response.request) from err
            raise APIConnectionError(request=self.response.request) from err


def _aiohttp_reader(response: Any) -> Any:
    """aiohttp's body reader under the SDK's response wrappers, or None (another transport)."""
    stream = getattr(response, "stream", None)
    for _ in range(4):  # httpx's timing wrapper, then the SDK's aiohttp transport stream
        if stream is None:
            return None
        raw = getattr(stream, "_aiohttp_response", None)
        if raw is not None:
            return getattr(raw, "content", None)
        stream = getattr(stream, "_stream", None)
    return None


def _decode(blocks: list[bytes], response: Any) -> tuple[list[Any], bool]:
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
        if isinstance(value, dict) and value.get("error"):
            error = value["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise APIError(
                message=message if isinstance(message, str) else "An error occurred during streaming",
                request=response.request,
                body=error,
            )
        values.append(value)
    return values, False
