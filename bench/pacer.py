"""A lean, paced OpenAI-compatible streaming endpoint for load scenarios: microseconds per delta.

Why it exists: the scripted LLM (`onward.testing.fake_llm`) paces a stream with one
`asyncio.wait_for` and one uvicorn/h11 send per delta, which costs of the order of 100 µs of
CPU per delta. 500 runs x 100 deltas/s would need several cores for the test double alone, so
on a 2-core machine the concurrency scenario would measure the LLM, not Onward. This server
writes precomputed chunked-encoding frames straight to the transport from one timer callback per
delta; the bench calibrates both servers (read directly, no Onward) and reports the numbers.

Protocol: `POST …/chat/completions` (any path ending so) always streams. The last user message
chooses the stream: `<N>x<D>ms` anywhere in it gives N one-character `content` deltas, the k-th
sent D·k ms after the request (k = 0 … N-1), then `finish_reason: "stop"` and `[DONE]` at D·N ms;
without that pattern it answers "ok" at once. Connections are kept alive.
`python -m bench.pacer [--port P]` prints its base URL (…/v1) and serves until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Any, cast

import uvloop

from bench.listen import serve_until_stopped

_PACE = re.compile(r"(\d+)x(\d+)ms")
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_MODELS = json.dumps({"object": "list", "data": [{"id": "paced", "object": "model", "created": 0,
                                                  "owned_by": "bench"}]}).encode()


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"id": "chatcmpl-paced", "object": "chat.completion.chunk", "created": 0, "model": "paced",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return _chunk(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


_ROLE = _sse({"role": "assistant", "content": ""})
_DELTA = _sse({"content": "x"})
_TAIL = _sse({}, "stop") + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._busy = False  # a response is being streamed
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._serve()

    def _serve(self) -> None:
        while not self._busy and self.transport is not None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buf) < end + 4 + length:
                return
            body, self._buf = self._buf[end + 4 : end + 4 + length], self._buf[end + 4 + length :]
            method, path = head.split(" ", 2)[:2]
            if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                self._start(body)
            elif method == "GET" and path.rstrip("/").endswith("/models"):
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                     % (len(_MODELS), _MODELS))
            else:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")

    def _start(self, body: bytes) -> None:
        assert self.transport is not None
        count, delay = 0, 0.0
        try:
            messages = json.loads(body).get("messages") or []
            text = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
            found = _PACE.search(text)
            if found:
                count, delay = int(found.group(1)), int(found.group(2)) / 1000
        except (ValueError, AttributeError):
            pass
        self.transport.write(_HEAD + _ROLE)
        if count == 0:
            self.transport.write(_sse({"content": "ok"}) + _TAIL)
            return
        self._busy = True
        loop = asyncio.get_running_loop()
        self._send(loop, loop.time(), 0, count, delay)

    def _send(self, loop: asyncio.AbstractEventLoop, start: float, k: int, count: int, delay: float) -> None:
        self._timer = None
        if self.transport is None:
            return
        if k < count:
            self.transport.write(_DELTA)
            self._timer = loop.call_at(start + (k + 1) * delay, self._send, loop, start, k + 1, count, delay)
            return
        self.transport.write(_TAIL)
        self._busy = False
        self._serve()  # a request that came meanwhile on this connection


async def serve(host: str, port: int) -> None:
    await serve_until_stopped(_Connection, host, port, "/v1")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pacer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))  # a lean load generator leaves the CPU to the server


if __name__ == "__main__":
    main()
