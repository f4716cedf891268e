"""A minimal HTTP/1.1 streaming client on asyncio.Protocol, for reading hundreds of streams at once.

httpx costs of the order of 100-200 µs of client CPU per network read of a stream (anyio, h11,
httpx layers), and with hundreds of SSE streams each event tends to arrive in a read of its own:
on a 2-core machine the clients alone would then eat the CPU the server needs. This client
decodes `Transfer-Encoding: chunked` (or a Content-Length or close-delimited body) inside
`data_received` and hands each read's payload to a callback: no task switch per read.
One request per connection; the connection closes when the callback says stop or the body ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit


class HttpError(RuntimeError):
    """The server answered with an unexpected status."""


class _Stream(asyncio.Protocol):
    def __init__(self, on_body: Callable[[bytes], bool], done: asyncio.Future[int], ok: int = 200) -> None:
        self._on_body = on_body
        self._ok = ok
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._in_head = True
        self._status = 0
        self._chunked = False
        self._remaining: int | None = None  # Content-Length left, or None (chunked / until close)
        self._chunk_left = 0  # bytes of the current chunk still to come (chunked)
        self._error_body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        if self._in_head:
            self._buf += data
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._buf[:end].decode("latin-1"), self._buf[end + 4 :]
            self._buf = b""
            self._in_head = False
            lines = head.split("\r\n")
            self._status = int(lines[0].split(" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "transfer-encoding" and "chunked" in value:
                    self._chunked = True
                elif name == "content-length":
                    self._remaining = int(value)
            if not data and self._remaining != 0:
                return
        body, finished = self._decode(data)
        if self._status != self._ok:
            self._error_body += body
            if finished:
                self._finish()
            return
        if (body and self._on_body(body)) or finished:
            self._finish()

    def _decode(self, data: bytes) -> tuple[bytes, bool]:
        """The payload in `data` and whether the body is complete."""
        if not self._chunked:
            if self._remaining is None:
                return data, False
            body = data[: self._remaining]
            self._remaining -= len(body)
            return body, self._remaining == 0
        buf = self._buf + data if self._buf else data
        self._buf = b""
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n:
            if self._chunk_left < 0:  # the CRLF that ends a chunk
                skip = min(-self._chunk_left, n - pos)
                pos += skip
                self._chunk_left += skip
                continue
            if self._chunk_left > 0:
                take = min(self._chunk_left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._chunk_left = -2
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                self._buf = buf[pos:]
                break
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                return b"".join(out), True
            self._chunk_left = size
        return b"".join(out), False

    def _finish(self) -> None:
        if not self._done.done():
            if self._status == self._ok:
                self._done.set_result(self._status)
            else:
                self._done.set_exception(HttpError(f"HTTP {self._status}: {self._error_body[:300]!r}"))
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            if self._in_head:
                self._done.set_exception(ConnectionError(f"connection closed before a response: {exc}"))
            elif self._status != self._ok:
                self._done.set_exception(HttpError(f"HTTP {self._status}: {self._error_body[:300]!r}"))
            else:
                self._done.set_result(self._status)


async def stream(
    url: str,
    on_body: Callable[[bytes], bool],
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    ok: int = 200,
) -> None:
    """Request `url`, call `on_body(payload)` for each read of the response body until it ends or
    `on_body` returns True (then the connection is dropped). Raises HttpError unless status `ok`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Stream(on_body, done, ok), host, port)
    try:
        transport.write(request)
        await done
    finally:
        transport.close()


async def request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None, ok: int = 200
) -> bytes:
    """One request on a connection of its own; the whole response body. Raises HttpError unless `ok`."""
    parts: list[bytes] = []

    def on_body(data: bytes) -> bool:
        parts.append(data)
        return False

    await stream(url, on_body, method=method, headers=headers, body=body, ok=ok)
    return b"".join(parts)
