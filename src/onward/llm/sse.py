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


async def iter_sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bytes]]:
    """(event, data) for each SSE event in a byte stream; comments and ids are skipped."""
    buf = b""
    async for chunk in chunks:
        if b"\r" in chunk or buf.endswith(b"\r"):
            buf = (buf + chunk).replace(b"\r\n", b"\n")
            if buf.endswith(b"\r"):
                blocks = buf[:-1].replace(b"\r", b"\n").split(b"\n\n")
                buf = blocks.pop() + b"\r"
            else:
                blocks = buf.replace(b"\r", b"\n").split(b"\n\n")
                buf = blocks.pop()
        else:
            blocks = (buf + chunk).split(b"\n\n")
            buf = blocks.pop()
        for block in blocks:
            parsed = _parse_block(block)
            if parsed is not None:
                yield parsed
    if buf.strip():
        parsed = _parse_block(buf)
        if parsed is not None:
            yield parsed


def _parse_block(block: bytes) -> tuple[bytes, bytes] | None:
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
    """The SDK's AsyncStream with our parser: yields each chunk as a plain JSON value."""

    async def __stream__(self) -> AsyncIterator[Any]:
        response = self.response
        events = iter_sse_data(self._bytes())
        try:
            async for _event, data in events:
                if data.startswith(b"[DONE]"):
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1):  # finish the body so the connection is reused
                            async for _ in events:
                                pass
                    break
                value = orjson.loads(data)
                if isinstance(value, dict) and value.get("error"):
                    error = value["error"]
                    message = error.get("message") if isinstance(error, dict) else None
                    raise APIError(
                        message=message if isinstance(message, str) else "An error occurred during streaming",
                        request=response.request,
                        body=error,
                    )
                yield value
        finally:
            await response.aclose()

    async def _bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_bytes():
                yield chunk
        except APIError:
            raise
        except Exception as err:  # the transport's own exception types vary across SDK versions
            if "timeout" in type(err).__name__.lower():
                raise APITimeoutError(request=self.response.request) from err
            raise APIConnectionError(request=self.response.request) from err
