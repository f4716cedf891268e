"""The floor of the concurrency scenario: the least server that plays Onward's part, for calibration.

Why it exists: whether the 500 x 200 targets are out of this machine's reach or out of Onward's is
a measurement, not an argument. This process answers the three requests the scenario makes (create
a conversation, start a run, read the run's stream) in Onward's wire format, asks the LLM for each
run's completion, and relays the deltas with nothing in between: no database, no credential, no
framework, no history, one uvloop process. Like Onward's journal it joins the deltas a run receives
within one flush interval (20 ms, Onward's default) into one event; unlike it, it never waits for a
commit. What it achieves on a machine is a floor for any Python server keeping Onward's wire format
and batching there; Onward's distance from it is Onward's own cost.

Protocol: `POST /api/conversations` → 201 `{id}`; `POST /api/conversations/{cid}/runs` with
`{input}` → 202 `{id, status}`, and the run asks `--llm`'s `/chat/completions` for `input` (model
`paced`); `GET /api/runs/{rid}/stream` → SSE frames (`id`/`event`/`data`, data `{seq, run_id, type,
ts, data}`): `run.started`, joined `message.delta`s, `run.completed` (`run.failed` if the LLM cannot
be reached or its answer ends without `[DONE]`: a broken floor fails the bench, it never hangs it),
then the end of the body.
Anything else is 404. Credentials are not checked. `python -m bench.relay --llm URL [--port P]`
prints its base URL and serves until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop

from bench.listen import serve_until_stopped

FLUSH_INTERVAL_S = 0.02  # Onward's `flush_interval`
_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
_END = b"0\r\n\r\n"


class _Run:
    """A run's log (kept whole: a reader that joins late gets all of it) and its reader."""

    __slots__ = ("done", "frames", "id", "pending", "pending_ts", "reader", "seq")

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.seq = 0
        self.frames: list[bytes] = []  # chunked-encoded SSE frames
        self.reader: asyncio.Transport | None = None
        self.pending: list[str] = []  # deltas waiting for the next flush
        self.pending_ts = 0.0  # when the first of them arrived
        self.done = False

    def emit(self, kind: str, data: dict[str, Any], ts: float) -> None:
        self.seq += 1
        event = orjson.dumps({"seq": self.seq, "run_id": self.id, "type": kind, "ts": ts, "data": data})
        frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (self.seq, kind.encode(), event)
        chunk = b"%x\r\n%s\r\n" % (len(frame), frame)
        self.frames.append(chunk)
        if self.reader is not None:
            self.reader.write(chunk)

    def flush(self) -> None:
        if self.pending:
            self.emit("message.delta", {"message_id": "msg", "text": "".join(self.pending)}, self.pending_ts)
            self.pending.clear()

    def finish(self, error: str | None = None) -> None:
        self.flush()
        if error is None:
            self.emit("run.completed", {}, time.time())
        else:
            self.emit("run.failed", {"error": error}, time.time())
        self.done = True
        if self.reader is not None:
            self.reader.write(_END)
            self.reader.close()
            self.reader = None


class Relay:
    """The runs, the LLM's address, and the one flush timer for every run's pending deltas."""

    def __init__(self, llm_url: str) -> None:
        parts = urlsplit(llm_url)
        self.llm_host = parts.hostname or "127.0.0.1"
        self.llm_port = parts.port or 80
        self.llm_path = parts.path.rstrip("/") + "/chat/completions"
        self.runs: dict[str, _Run] = {}
        self._ids = itertools.count(1)
        self._pending: dict[str, _Run] = {}
        self._timer: asyncio.TimerHandle | None = None

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    def delta(self, run: _Run, text: str, ts: float) -> None:
        if not run.pending:
            run.pending_ts = ts
            self._pending[run.id] = run
        run.pending.append(text)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._flush)

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, {}
        for run in pending.values():
            run.flush()

    def start(self, text: str) -> _Run:
        run_id = self.new_id("run")
        run = self.runs[run_id] = _Run(run_id)
        run.emit("run.started", {}, time.time())
        body = orjson.dumps({"model": "paced", "stream": True, "messages": [{"role": "user", "content": text}]})
        request = (
            b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (self.llm_path.encode(), self.llm_host.encode(), len(body), body)
        )
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(lambda: _Completion(self, run, request), self.llm_host, self.llm_port))

        def connected(task: asyncio.Task[Any]) -> None:  # a run whose LLM is out of reach fails, never hangs
            error = "cancelled" if task.cancelled() else task.exception()
            if error is not None and not run.done:
                run.finish(f"the LLM connection failed: {error!r}")

        task.add_done_callback(connected)
        return run


class _Completion(asyncio.Protocol):
    """One run's streamed completion from the LLM: each `data:` event's content is a delta."""

    def __init__(self, relay: Relay, run: _Run, request: bytes) -> None:
        self.relay = relay
        self.run = run
        self.request = request
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._now = 0.0  # when the read being parsed arrived: its deltas' ts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self._now = time.time()
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        blocks = (self._buf + body).split(b"\n\n")
        self._buf = blocks.pop()
        for block in blocks:
            if not block.startswith(b"data: "):
                continue
            if block.startswith(b"data: [DONE]"):
                self.run.finish()
                continue
            chunk = orjson.loads(block[6:])
            text = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
            if text:
                self.relay.delta(self.run, text, self._now)

    def on_message_complete(self) -> None:
        if not self.run.done:
            self.run.finish("the LLM's answer ended without [DONE]")
        if self.transport is not None:
            self.transport.close()


class _Client(asyncio.Protocol):
    """One client connection; requests in turn (keep-alive), a stream ends it."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._reply(400, b'{"error":"malformed request"}')
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self._url.split(b"?", 1)[0].decode()
        body = b"".join(self._body)
        self._url, self._body = b"", []
        parts = path.strip("/").split("/")
        if method == b"POST" and parts == ["api", "conversations"]:
            self._reply(201, orjson.dumps({"id": self.relay.new_id("conv")}))
        elif method == b"POST" and len(parts) == 4 and parts[:2] == ["api", "conversations"] and parts[3] == "runs":
            run = self.relay.start(str(orjson.loads(body)["input"]))
            self._reply(202, orjson.dumps({"id": run.id, "status": "running"}))
        elif method == b"GET" and len(parts) == 4 and parts[:2] == ["api", "runs"] and parts[3] == "stream":
            self._stream(parts[2])
        else:
            self._reply(404, b'{"error":"not found"}')

    def _stream(self, run_id: str) -> None:
        assert self.transport is not None
        run = self.relay.runs.get(run_id)
        if run is None:
            self._reply(404, b'{"error":"no such run"}')
            return
        self.transport.write(_STREAM_HEAD + b"".join(run.frames))
        if run.done:
            self.transport.write(_END)
            self.transport.close()
        else:
            run.reader = self.transport

    def _reply(self, status: int, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)
        )


async def serve(host: str, port: int, llm_url: str) -> None:
    relay = Relay(llm_url)
    await serve_until_stopped(lambda: _Client(relay), host, port)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", required=True, help="the LLM's base URL (…/v1), e.g. bench.pacer's")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.llm))


if __name__ == "__main__":
    main()
