"""A scripted OpenAI-compatible chat-completions server: real HTTP and SSE, as strict as real APIs.

Design decision: the server keeps no conversation state. The turn it plays is chosen from the
request itself (how many assistant messages follow the last user message), so concurrent
conversations and client retries need no session; only fault counters are remembered. It runs
uvicorn on a thread with its own event loop, so sync tests, async tests and other processes (through
the `/_scripts` admin endpoints) can all drive the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from onward.testing.scripts import (
    InvalidRequest,
    Turn,
    check_request,
    check_turn,
    completion,
    position,
    stream_frames,
    usage,
)

__all__ = ["InvalidRequest", "ScriptedLLM", "Turn", "check_request", "main"]

_SEND_BATCH = 256  # SSE frames joined into one write when there is no delay between them


class _DropConnection(Exception):
    """Raised inside a handler to make uvicorn close the connection without finishing the response."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DropConnection))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class _State:
    """Everything the server shares with the Python API; guarded by one lock."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.scripts: list[tuple[int, re.Pattern[str] | None, list[dict[str, Any]]]] = []
        self.requests: list[Any] = []
        self.rejections: list[str] = []
        self.disconnects = 0
        self.fault_hits: dict[tuple[int, int], int] = {}
        self.next_id = 1
        self.active: set[asyncio.Event] = set()  # per-request "stop sending" events (server loop)
        self.closing = False

    def add(self, script: Mapping[str, Any]) -> int:
        if not isinstance(script, Mapping) or not isinstance(script.get("turns"), list):
            raise ValueError("a script is {'match': regex | null, 'turns': [turn, ...]}")
        match = script.get("match")
        if match is not None and not isinstance(match, str):
            raise ValueError("'match' must be a regex string or null")
        turns = [check_turn(t, f"turns[{i}]") for i, t in enumerate(script["turns"])]
        pattern = re.compile(match) if match is not None else None
        with self.cond:
            script_id, self.next_id = self.next_id, self.next_id + 1
            self.scripts.append((script_id, pattern, turns))
            self.cond.notify_all()
        return script_id

    def reset(self) -> None:
        with self.cond:
            for kept in (self.scripts, self.requests, self.rejections, self.fault_hits):
                kept.clear()
            self.disconnects = 0
            self.cond.notify_all()

    def record(self, body: Any, rejection: str | None = None) -> None:
        with self.cond:
            self.requests.append(body)
            if rejection is not None:
                self.rejections.append(rejection)
            self.cond.notify_all()

    def select(self, messages: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The turn to play and the fault that applies to this request (if any)."""
        content, step = position(messages)
        with self.cond:
            for script_id, pattern, turns in reversed(self.scripts):
                if pattern is not None and not pattern.search(content):
                    continue
                if step >= len(turns):
                    return {"text": "Done."}, None
                turn = turns[step]
                fault = turn.get("fault")
                if fault is not None:
                    hits = self.fault_hits.get((script_id, step), 0) + 1
                    self.fault_hits[(script_id, step)] = hits
                    if fault.get("times") is not None and hits > int(fault["times"]):
                        fault = None
                return turn, fault
        return {"text": "OK"}, None


class _Exchange:
    """One request/response: sends, and notices when the client leaves or the server stops."""

    def __init__(self, state: _State, receive: Receive, send: Send) -> None:
        self.state, self.receive, self.send = state, receive, send
        self.gone = asyncio.Event()  # set when nothing more should be sent
        self.finished = False  # a disconnect from now on is no longer the client abandoning us
        self.completed = False
        self.disconnected = False

    async def watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        if not self.finished:
            self.disconnected = True
            with self.state.cond:
                self.state.disconnects += 1
                self.state.cond.notify_all()
        self.gone.set()

    async def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": list(headers)})

    async def write(self, frames: Sequence[bytes], delay: float = 0.0) -> bool:
        """Send frames; False as soon as the client left or the server is stopping."""
        step = 1 if delay > 0 else _SEND_BATCH
        for i in range(0, len(frames), step):
            if self.gone.is_set():
                return False
            await self.send({"type": "http.response.body", "body": b"".join(frames[i : i + step]),
                             "more_body": True})
            if delay > 0:
                try:
                    await asyncio.wait_for(self.gone.wait(), delay)
                except TimeoutError:
                    continue
                return False
        return not self.gone.is_set()

    async def end(self, body: bytes = b"") -> None:
        self.finished = True
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
        self.completed = True


class _Chat:
    """`POST /v1/chat/completions` as a raw ASGI app: faults need control over every byte sent."""

    def __init__(self, state: _State) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await Request(scope, receive).body()
        body: Any = None
        try:
            body = json.loads(raw)
            check_request(body)
        except ValueError as exc:  # InvalidRequest, or JSON that does not parse
            reason = str(exc) if isinstance(exc, InvalidRequest) else "the body is not valid JSON"
            self.state.record(body, reason)
            return await _error(400, reason)(scope, receive, send)
        self.state.record(body)
        turn, fault = self.state.select(body["messages"])
        fault = fault or {}
        if "status" in fault:
            status, after = int(fault["status"]), fault.get("retry_after")
            headers = {} if after is None else {"retry-after": str(after)}
            text = fault.get("message") or f"scripted fault: HTTP {status}"
            return await _error(status, text, headers)(scope, receive, send)

        exchange = _Exchange(self.state, receive, send)
        watcher = asyncio.create_task(exchange.watch())
        self.state.active.add(exchange.gone)
        if self.state.closing:
            exchange.gone.set()
        try:
            if fault.get("hang") or ("hang_after_chunks" in fault and not body.get("stream")):
                await exchange.gone.wait()
            elif "drop_after_chunks" in fault and not body.get("stream"):
                raise _DropConnection
            elif body.get("stream"):
                await _play_stream(exchange, body, turn, fault)
            else:
                await exchange.start(200, [(b"content-type", b"application/json")])
                await exchange.end(json.dumps(completion(body, turn)).encode())
        finally:
            exchange.finished = True
            self.state.active.discard(exchange.gone)
            watcher.cancel()
        if exchange.gone.is_set() and not (exchange.disconnected or exchange.completed):
            raise _DropConnection  # the server is stopping: cut the response short


async def _play_stream(exchange: _Exchange, body: dict[str, Any], turn: dict[str, Any],
                       fault: dict[str, Any]) -> None:
    head, frames = stream_frames(body, turn)

    def sse(data: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({**head, **data}).encode() + b"\n\n"

    await exchange.start(200, [(b"content-type", b"text/event-stream; charset=utf-8"),
                               (b"cache-control", b"no-cache")])
    preamble = sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "finish_reason": None}]})
    stop_at = fault.get("hang_after_chunks", fault.get("drop_after_chunks"))
    limit = len(frames) if stop_at is None else min(int(stop_at), len(frames))
    delay = float(turn.get("delay_ms", 0)) / 1000
    if not await exchange.write([preamble]) or not await exchange.write(frames[:limit], delay):
        return
    if "hang_after_chunks" in fault:
        await exchange.gone.wait()
        return
    if "drop_after_chunks" in fault:
        raise _DropConnection
    finish = "tool_calls" if turn.get("tool_calls") else "stop"
    tail = [sse({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})]
    if (body.get("stream_options") or {}).get("include_usage"):
        tail.append(sse({"choices": [], "usage": turn.get("usage") or usage(body, len(frames))}))
    tail.append(b"data: [DONE]\n\n")
    if await exchange.write(tail):
        await exchange.end()


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    kind = ("rate_limit_error" if status == 429 else "server_error" if status >= 500
            else "invalid_request_error")
    error = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(error, status, headers=headers)


def create_app(state: _State) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": "scripted", "object": "model", "created": 0, "owned_by": "onward"}]})

    async def add_script(request: Request) -> JSONResponse:
        try:
            script_id = state.add(await request.json())
        except ValueError as exc:
            return _error(400, str(exc))
        return JSONResponse({"id": script_id}, 201)

    async def reset(request: Request) -> JSONResponse:
        state.reset()
        return JSONResponse({"ok": True})

    async def requests(request: Request) -> JSONResponse:
        with state.cond:
            data = {"requests": list(state.requests), "rejections": list(state.rejections),
                    "disconnects": state.disconnects}
        return JSONResponse(data)

    return Starlette(routes=[
        Route("/v1/chat/completions", _Chat(state), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/_scripts", add_script, methods=["POST"]),
        Route("/_scripts", reset, methods=["DELETE"]),
        Route("/_requests", requests, methods=["GET"]),
    ])


class ScriptedLLM:
    """The scripted server on a background thread; `with ScriptedLLM() as llm: llm.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._state = _State()
        self.app = create_app(self._state)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def script(self, turns: Iterable[Mapping[str, Any]], match: str | None = None) -> int:
        """Add a script (later scripts win); returns its id."""
        return self._state.add({"match": match, "turns": [dict(t) for t in turns]})

    def add_script(self, script: Mapping[str, Any]) -> int:
        return self._state.add(script)

    def reset(self) -> None:
        """Forget scripts, recorded requests, rejections and fault counters."""
        self._state.reset()

    @property
    def requests(self) -> list[Any]:
        with self._state.cond:
            return list(self._state.requests)

    @property
    def rejections(self) -> list[str]:
        with self._state.cond:
            return list(self._state.rejections)

    @property
    def disconnects(self) -> int:
        """Responses the client abandoned before they were complete."""
        with self._state.cond:
            return self._state.disconnects

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Block until `predicate()` holds (re-checked whenever the server records something)."""
        with self._state.cond:
            if not self._state.cond.wait_for(predicate, timeout_s):
                raise TimeoutError(f"condition not reached within {timeout_s} s")

    async def wait_until_async(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        await asyncio.to_thread(self.wait_until, predicate, timeout_s)

    def start(self) -> ScriptedLLM:
        if self._thread is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY (no 40 ms Nagle stalls) on such sockets.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(sock),),
                                        name=f"scripted-llm:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            self.stop()
            raise RuntimeError(f"the scripted LLM server did not start: {self._error!r}")
        return self

    async def _serve(self, sock: socket.socket) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False,
                                http="h11", ws="none", loop="asyncio")
        server = uvicorn.Server(config)
        try:
            config.load()
            server.lifespan = config.lifespan_class(config)  # what Server.serve() would set up
            await server.startup(sockets=[sock])
        except Exception as exc:
            self._error = exc
            sock.close()
            return
        finally:
            self._ready.set()
        await self._stopping.wait()
        # Stop quickly and deterministically: no new connections, every pending response ends now.
        self._state.closing = True
        for gone in list(self._state.active):
            gone.set()
        for srv in server.servers:
            srv.close()
        for conn in list(server.server_state.connections):
            conn.shutdown()
        tasks = set(server.server_state.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
        for srv in server.servers:
            await srv.wait_closed()

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop has already finished
                pass
        thread.join(10)
        self._thread = self._loop = self._stopping = None
        self._ready.clear()
        self._state.closing = False

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m onward.testing.fake_llm",
                                     description="Serve the scripted OpenAI-compatible LLM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--script", action="append", default=[], type=Path,
                        help="JSON file holding one script or a list of scripts (repeatable)")
    args = parser.parse_args(argv)
    llm = ScriptedLLM(args.host, args.port)
    for path in args.script:
        data = json.loads(path.read_text())
        for script in data if isinstance(data, list) else [data]:
            llm.add_script(script)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with llm:
        print(llm.base_url, flush=True)
        done.wait()


if __name__ == "__main__":
    main()
