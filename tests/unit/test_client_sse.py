"""The CLI's client side: SSE parsing, resuming streams, errors, rendering, Ctrl-C, commands.

Everything talks to a real HTTP server on a free port (`FakeOnward`, http.server in a thread)
whose stream responses are scripted per connection, so a test can drop a connection mid-frame,
go silent, or answer 503, and check what the client sends when it comes back.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from rich.console import Console
from typer.testing import CliRunner

from onward.cli import EXIT_ERROR, EXIT_OK, EXIT_STOPPED, Follower, app
from onward.client import OnwardClient, ServerUnreachable, SSEMessage, SSEParser
from onward.core.events import EVENT_TYPES, MessageDelta, encode, sse_frame
from onward.errors import ConfigError, ConversationBusy, NotFound, OnwardError
from onward.render import RunRenderer

# -- a real, scriptable HTTP server ------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


Script = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        self.server.fake.dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.fake.dispatch(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOnward

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up on a stream is what these tests do on purpose


def send_json(h: Handler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def sse_start(h: Handler) -> None:
    h.close_connection = True
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.send_header("Connection", "close")
    h.end_headers()


def sse_send(h: Handler, text: str) -> None:
    data = text.encode()
    h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    h.wfile.flush()


def sse_end(h: Handler) -> None:
    h.wfile.write(b"0\r\n\r\n")
    h.wfile.flush()


def drop(h: Handler) -> None:
    """Hang up without finishing the chunked body: to the client, a broken connection."""
    h.wfile.flush()
    h.connection.shutdown(socket.SHUT_RDWR)


def frame(seq: int, type_: str, **data: Any) -> str:
    return sse_frame(encode("r1", seq, EVENT_TYPES[type_](**data), ts=1.0))


def error(h: Handler, status: int, code: str, message: str, **extra: Any) -> None:
    send_json(h, status, {"error": {"code": code, "message": message, **extra}})


class FakeOnward:
    """Just enough of Onward's API for run r1 in conversation c1; streams follow `self.streams`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.streams: list[Script] = []
        self.routes: dict[tuple[str, str], Script] = {}
        self.run: dict[str, Any] = {
            "id": "r1",
            "conversation_id": "c1",
            "status": "running",
            "last_seq": 0,
        }
        self.cancelled = threading.Event()
        self.release = threading.Event()  # ends every hanging stream (set at teardown)
        self._lock = threading.Lock()
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.fake = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def dispatch(self, h: Handler, method: str) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(
                Request(method, parts.path, parse_qs(parts.query), dict(h.headers), body)
            )
        route = self.routes.get((method, parts.path))
        if route is not None:
            route(h)
        elif (method, parts.path) == ("GET", "/api/runs/r1/stream"):
            with self._lock:
                script = self.streams.pop(0) if self.streams else None
            if script is None:
                error(h, 503, "unavailable", "shutting down")
            else:
                script(h)
        elif (method, parts.path) == ("GET", "/api/runs/r1"):
            send_json(h, 200, self.run)
        elif (method, parts.path) == ("POST", "/api/runs/r1/cancel"):
            changed = self.run["status"] in ("queued", "running")
            if changed:
                self.run = {**self.run, "status": "cancelling"}
            self.cancelled.set()
            send_json(h, 202, {**self.run, "changed": changed})
        else:
            error(h, 404, "not_found", f"no such thing: {parts.path}")

    def stream_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/stream")]

    def hang(self, h: Handler) -> None:
        """Stay silent until the test releases the stream, then end it cleanly."""
        self.release.wait(10)
        sse_end(h)

    def __enter__(self) -> FakeOnward:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeOnward]:
    with FakeOnward() as server:
        yield server


@pytest.fixture
def client(fake: FakeOnward) -> Iterator[OnwardClient]:
    with OnwardClient(fake.url, reconnect_initial=0.01, reconnect_max=0.05) as c:
        yield c


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# -- the SSE parser ----------------------------------------------------------------------------


def feed_all(parser: SSEParser, data: bytes, step: int) -> list[SSEMessage]:
    out: list[SSEMessage] = []
    for i in range(0, len(data), step):
        out += parser.feed(data[i : i + step])
    return out


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_parser_handles_any_chunking_and_every_line_ending(step: int) -> None:
    stream = (
        "\ufeff: connected\n\n"
        'id: 1\nevent: message.delta\ndata: {"x": "é→"}\n\n'
        "id: 2\r\nevent: tool.output\r\ndata: first\r\ndata: second\r\n\r\n"
        "id: 3\revent: run.completed\rdata:no-space\r\r"
        ": heartbeat\n\n"
        "event: ignored-without-data\n\n"
        "data: keeps-last-id\nretry: 1500\nbogus field\n\n"
        "id: 9\ndata: partial-never-dispatched\n"
    ).encode()
    parser = SSEParser()
    messages = feed_all(parser, stream, step)
    assert messages == [
        SSEMessage("message.delta", '{"x": "é→"}', "1"),
        SSEMessage("tool.output", "first\nsecond", "2"),
        SSEMessage("run.completed", "no-space", "3"),
        SSEMessage("message", "keeps-last-id", "3"),
    ]
    assert parser.retry_ms == 1500


def test_parser_reads_the_server_serializer() -> None:
    event = encode("r1", 7, MessageDelta(message_id="m", text="a\nb"), ts=1.5)
    (message,) = SSEParser().feed(sse_frame(event).encode())
    assert message.id == "7" and message.event == "message.delta"
    assert json.loads(message.data) == json.loads(event.json)


# -- following a stream ------------------------------------------------------------------------


def test_stream_yields_events_skips_heartbeats_and_ends_at_terminal(
    fake: FakeOnward, client: OnwardClient
) -> None:
    def script(h: Handler) -> None:
        sse_start(h)
        sse_send(h, ": connected\n\n" + frame(1, "run.started"))
        sse_send(h, ": heartbeat\n\n")
        sse_send(
            h, frame(2, "message.delta", message_id="m", text="hi") + frame(3, "run.completed")
        )
        fake.hang(
            h
        )  # a terminal event ends the stream on the client's side, whatever the server does

    fake.streams.append(script)
    events = list(client.stream("r1"))
    assert [(e["seq"], e["type"]) for e in events] == [
        (1, "run.started"),
        (2, "message.delta"),
        (3, "run.completed"),
    ]
    assert events[1]["data"] == {"message_id": "m", "text": "hi"}
    (request,) = fake.stream_requests()
    assert request.query == {"after": ["0"]} and "last-event-id" not in {
        k.lower() for k in request.headers
    }


def test_stream_resumes_after_a_drop_mid_frame_without_loss_or_duplicates(
    fake: FakeOnward, client: OnwardClient
) -> None:
    def first(h: Handler) -> None:
        sse_start(h)
        sse_send(
            h,
            frame(4, "message.delta", message_id="m", text="a")
            + frame(5, "message.delta", message_id="m", text="b"),
        )
        sse_send(h, frame(6, "message.delta", message_id="m", text="c")[:25])  # half a frame
        drop(h)

    def second(h: Handler) -> None:
        sse_start(h)
        # a server replaying one event too many must not make the client render it twice
        sse_send(h, frame(5, "message.delta", message_id="m", text="b"))
        sse_send(
            h,
            frame(6, "message.delta", message_id="m", text="c")
            + frame(7, "run.failed", error="boom"),
        )
        sse_end(h)

    fake.streams += [first, second]
    events = list(client.stream("r1", after=3))
    assert [e["seq"] for e in events] == [4, 5, 6, 7]
    assert "".join(e["data"].get("text", "") for e in events) == "abc"
    one, two = fake.stream_requests()
    assert one.query["after"] == ["3"] and "Last-Event-ID" not in one.headers
    assert two.headers["Last-Event-ID"] == "5" and two.query["after"] == ["5"]


def test_stream_reconnects_when_the_connection_goes_silent(fake: FakeOnward) -> None:
    def first(h: Handler) -> None:
        sse_start(h)
        sse_send(h, frame(1, "run.started"))
        fake.hang(h)  # no heartbeat, no FIN: only the read timeout can tell

    def second(h: Handler) -> None:
        sse_start(h)
        sse_send(h, frame(2, "run.completed"))
        sse_end(h)

    fake.streams += [first, second]
    with OnwardClient(fake.url, stream_read_timeout=0.3, reconnect_initial=0.01) as client:
        assert [e["seq"] for e in client.stream("r1")] == [1, 2]
    assert fake.stream_requests()[1].headers["Last-Event-ID"] == "1"


def test_stream_reconnects_after_an_early_end_and_through_503(
    fake: FakeOnward, client: OnwardClient
) -> None:
    def first(h: Handler) -> None:
        sse_start(h)
        sse_send(h, frame(1, "run.started"))
        sse_end(h)  # a clean end before the terminal event (a proxy, a restarting server)

    def unavailable(h: Handler) -> None:
        error(h, 503, "unavailable", "restarting")

    def third(h: Handler) -> None:
        sse_start(h)
        sse_send(h, frame(2, "run.interrupted", reason="server restarted"))
        sse_end(h)

    fake.streams += [first, unavailable, third]
    assert [e["type"] for e in client.stream("r1")] == ["run.started", "run.interrupted"]
    assert [r.headers.get("Last-Event-ID") for r in fake.stream_requests()] == [None, "1", "1"]
    assert any(
        r.path == "/api/runs/r1" for r in fake.requests
    )  # it checked whether the run was over


def test_stream_of_a_finished_run_with_nothing_after_ends(
    fake: FakeOnward, client: OnwardClient
) -> None:
    fake.run = {**fake.run, "status": "completed", "last_seq": 4}

    def script(h: Handler) -> None:
        sse_start(h)
        sse_send(h, ": connected\n\n")
        sse_end(h)

    fake.streams.append(script)
    assert list(client.stream("r1", after=4)) == []
    assert len(fake.stream_requests()) == 1


def test_stream_gives_up_after_reconnect_timeout_and_says_how_to_reattach(fake: FakeOnward) -> None:
    def first(h: Handler) -> None:
        sse_start(h)
        sse_send(h, frame(1, "run.started"))
        drop(h)

    fake.streams.append(first)  # every later connection: 503
    with OnwardClient(
        fake.url, reconnect_initial=0.01, reconnect_max=0.02, reconnect_timeout=0.2
    ) as client:
        seen: list[int] = []
        with pytest.raises(ServerUnreachable, match=r"onward attach r1 --after 1"):
            for event in client.stream("r1"):
                seen.append(event["seq"])
    assert seen == [1]
    assert len(fake.stream_requests()) > 2


def test_stream_of_an_unknown_run_raises_not_found_at_once(
    fake: FakeOnward, client: OnwardClient
) -> None:
    with pytest.raises(NotFound, match="no such thing: /api/runs/nope/stream"):
        list(client.stream("nope"))
    assert len(fake.requests) == 1


def test_unreachable_server_says_where_and_what_to_do() -> None:
    url = closed_port_url()
    with OnwardClient(url) as client:
        with pytest.raises(ServerUnreachable) as info:
            client.list_runs()
        assert url in info.value.message and "onward serve" in info.value.message
        with pytest.raises(ServerUnreachable):
            list(client.stream("r1"))


# -- requests and errors -----------------------------------------------------------------------


def test_errors_become_onward_errors_with_the_servers_message(
    fake: FakeOnward, client: OnwardClient
) -> None:
    fake.routes[("POST", "/api/conversations/c1/runs")] = lambda h: error(
        h, 409, "conversation_busy", "c1 is busy", active_run_id="r0"
    )
    fake.routes[("POST", "/api/conversations/c2/runs")] = lambda h: error(
        h, 500, "config_error", "no LLM configured"
    )

    def bad_gateway(h: Handler) -> None:
        h.send_response(502)
        h.send_header("Content-Length", "11")
        h.end_headers()
        h.wfile.write(b"bad gateway")

    fake.routes[("GET", "/api/runs/r9")] = bad_gateway
    with pytest.raises(ConversationBusy) as busy:
        client.start_run("c1", "hello", model="m", if_busy="reject")
    assert busy.value.message == "c1 is busy" and busy.value.extra == {"active_run_id": "r0"}
    assert fake.requests[-1].body == {"input": "hello", "if_busy": "reject", "model": "m"}
    with pytest.raises(ConfigError, match="no LLM configured"):
        client.start_run("c2", "hello")
    with pytest.raises(OnwardError, match="HTTP 502: bad gateway") as gateway:
        client.get_run("r9")
    assert gateway.value.status_code == 502


def test_token_is_sent_and_list_endpoints_unwrap(fake: FakeOnward) -> None:
    fake.routes[("GET", "/api/runs")] = lambda h: send_json(h, 200, {"runs": [fake.run]})
    with OnwardClient(fake.url, token="s3cret") as client:
        assert client.list_runs(active=True) == [fake.run]
    request = fake.requests[-1]
    assert request.headers["Authorization"] == "Bearer s3cret" and request.query == {
        "active": ["true"]
    }


# -- rendering ---------------------------------------------------------------------------------


SCRIPTED = [
    {"seq": 1, "type": "run.started", "data": {}},
    {"seq": 2, "type": "message.started", "data": {"message_id": "m1"}},
    {"seq": 3, "type": "reasoning.delta", "data": {"message_id": "m1", "text": "Let me look"}},
    {"seq": 4, "type": "reasoning.delta", "data": {"message_id": "m1", "text": " around."}},
    {"seq": 5, "type": "message.delta", "data": {"message_id": "m1", "text": "Listing "}},
    {"seq": 6, "type": "message.delta", "data": {"message_id": "m1", "text": "files."}},
    {
        "seq": 7,
        "type": "tool.call.delta",
        "data": {"call_id": "t1", "name": "run_command", "arguments_delta": "{"},
    },
    {
        "seq": 8,
        "type": "message.completed",
        "data": {"message_id": "m1", "content": "Listing files."},
    },
    {
        "seq": 9,
        "type": "tool.started",
        "data": {"call_id": "t1", "name": "run_command", "arguments": '{"command": "ls; ls nope"}'},
    },
    {
        "seq": 10,
        "type": "tool.output",
        "data": {"call_id": "t1", "stream": "stdout", "text": "a.txt\nb"},
    },
    {
        "seq": 11,
        "type": "tool.output",
        "data": {"call_id": "t1", "stream": "stdout", "text": ".txt\n"},
    },
    {
        "seq": 12,
        "type": "tool.output",
        "data": {"call_id": "t1", "stream": "stderr", "text": "ls: nope: No such file\n"},
    },
    {
        "seq": 13,
        "type": "tool.completed",
        "data": {"call_id": "t1", "status": "error", "content": "a.txt\nb.txt\nexit code 2"},
    },
    {
        "seq": 14,
        "type": "tool.started",
        "data": {"call_id": "t2", "name": "read_file", "arguments": '{"path": "a.txt"}'},
    },
    {
        "seq": 15,
        "type": "tool.completed",
        "data": {"call_id": "t2", "status": "ok", "content": "hello"},
    },
    {"seq": 16, "type": "some.future.event", "data": {"x": 1}},
    {
        "seq": 17,
        "type": "tool.started",
        "data": {
            "call_id": "t3",
            "name": "run_command",
            "arguments": '{"command": "sleep 100", "timeout_s": 200}',
        },
    },
    {
        "seq": 18,
        "type": "tool.output",
        "data": {"call_id": "t3", "stream": "stdout", "text": "tick"},
    },
    {
        "seq": 19,
        "type": "tool.completed",
        "data": {"call_id": "t3", "status": "cancelled", "content": "tick\ncancelled by the user"},
    },
    {
        "seq": 20,
        "type": "message.completed",
        "data": {"message_id": "m2", "content": "Done, mostly."},
    },
    {
        "seq": 21,
        "type": "run.failed",
        "data": {"error": "the LLM endpoint failed: 500", "code": "llm_error"},
    },
]

EXPECTED = """\
Let me look around.
Listing files.
✎ run_command…
▶ run_command command="ls; ls nope"
│ a.txt
│ b.txt
│ ls: nope: No such file
✗ error: exit code 2
▶ read_file path="a.txt"
✓ ok: hello
▶ run_command command="sleep 100" timeout_s=200
│ tick
⊘ cancelled: cancelled by the user
Done, mostly.
✗ run failed: the LLM endpoint failed: 500
"""


def plain_renderer() -> tuple[RunRenderer, io.StringIO]:
    out = io.StringIO()
    return RunRenderer(Console(file=out, width=40, force_terminal=False)), out


def test_renderer_plain_output() -> None:
    renderer, out = plain_renderer()
    for event in SCRIPTED:
        renderer.handle(event)
    assert out.getvalue() == EXPECTED
    assert "\x1b" not in out.getvalue()
    assert renderer.status == "failed" and renderer.error == "the LLM endpoint failed: 500"
    assert renderer.last_seq == 21


def test_renderer_ignores_redelivered_events_and_replays_identically() -> None:
    renderer, out = plain_renderer()
    for event in SCRIPTED[:12]:
        renderer.handle(event)
    for event in SCRIPTED:  # a reconnect that replays from the start
        renderer.handle(event)
    assert out.getvalue() == EXPECTED


def test_renderer_long_results_and_cancelled_run() -> None:
    renderer, out = plain_renderer()
    content = "\n".join(f"line {i}" for i in range(25))
    renderer.handle(
        {
            "seq": 1,
            "type": "tool.started",
            "data": {"call_id": "t", "name": "read_file", "arguments": "{}"},
        }
    )
    renderer.handle(
        {
            "seq": 2,
            "type": "tool.completed",
            "data": {"call_id": "t", "status": "ok", "content": content},
        }
    )
    renderer.handle({"seq": 3, "type": "run.cancelled", "data": {"reason": "cancelled by user"}})
    lines = out.getvalue().splitlines()
    assert lines[0] == "▶ read_file"
    assert lines[1:3] == ["│ line 0", "│ line 1"] and lines[20] == "│ line 19"
    assert lines[21:] == ["│ … 5 more lines", "✓ ok", "■ run cancelled"]


# -- Ctrl-C: detach or stop --------------------------------------------------------------------


class HookedRenderer(RunRenderer):
    """Calls `hook` after the event with seq `at` was rendered (how the tests press Ctrl-C)."""

    def __init__(self, console: Console, at: int, hook: Callable[[], None]) -> None:
        super().__init__(console)
        self.at, self.hook = at, hook

    def handle(self, event: dict[str, Any]) -> None:
        super().handle(event)
        if event.get("seq") == self.at:
            self.hook()


def two_events_then(fake: FakeOnward, then: Callable[[Handler], None]) -> Script:
    def script(h: Handler) -> None:
        sse_start(h)
        sse_send(
            h, frame(1, "run.started") + frame(2, "message.delta", message_id="m", text="working")
        )
        then(h)

    return script


def finish_when_cancelled(fake: FakeOnward) -> Callable[[Handler], None]:
    def then(h: Handler) -> None:
        assert fake.cancelled.wait(10)
        sse_send(h, frame(3, "run.cancelled", reason="cancelled by user"))
        sse_end(h)

    return then


def test_one_ctrl_c_detaches_after_the_window(fake: FakeOnward, client: OnwardClient) -> None:
    fake.streams.append(two_events_then(fake, fake.hang))
    out = io.StringIO()
    holder: list[Follower] = []
    renderer = HookedRenderer(
        Console(file=out, force_terminal=False), 2, lambda: holder[0].interrupt()
    )
    follower = Follower(client, renderer, "r1", window=0.2)
    holder.append(follower)
    assert follower.run() == EXIT_OK
    assert follower.detached and not fake.cancelled.is_set()
    assert out.getvalue().splitlines()[-2:] == [
        "Press Ctrl-C again within 0.2 s to stop the run, or wait to detach.",
        "Detached; the run goes on. Re-attach: onward attach r1 --after 2",
    ]
    fake.release.set()
    assert follower.join(10)


def test_two_ctrl_c_stop_the_run_and_render_to_the_end(
    fake: FakeOnward, client: OnwardClient
) -> None:
    fake.streams.append(two_events_then(fake, finish_when_cancelled(fake)))
    out = io.StringIO()
    holder: list[Follower] = []

    def press_twice() -> None:
        holder[0].interrupt()
        holder[0].interrupt()

    renderer = HookedRenderer(Console(file=out, force_terminal=False), 2, press_twice)
    follower = Follower(client, renderer, "r1", window=30)
    holder.append(follower)
    assert follower.run() == EXIT_STOPPED
    assert out.getvalue() == (
        "working\n"
        "Press Ctrl-C again within 30 s to stop the run, or wait to detach.\n"
        "Stopping the run… (Ctrl-C again to detach)\n"
        "■ run cancelled\n"
    )
    assert [r.path for r in fake.requests if r.method == "POST"] == ["/api/runs/r1/cancel"]
    assert follower.join(10)


def test_real_sigint_twice_stops_the_run(fake: FakeOnward, client: OnwardClient) -> None:
    fake.streams.append(two_events_then(fake, finish_when_cancelled(fake)))
    holder: list[Follower] = []

    def press() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        assert holder[0].deciding.wait(10)  # the first press was seen: now the second
        os.kill(os.getpid(), signal.SIGINT)

    renderer = HookedRenderer(
        Console(file=io.StringIO(), force_terminal=False),
        2,
        lambda: threading.Thread(target=press).start(),
    )
    follower = Follower(client, renderer, "r1", window=30)
    holder.append(follower)
    previous = signal.getsignal(signal.SIGINT)
    assert follower.run() == EXIT_STOPPED
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back
    assert fake.cancelled.is_set()


def test_attaching_after_the_end_prints_the_final_status(
    fake: FakeOnward, client: OnwardClient
) -> None:
    fake.run = {**fake.run, "status": "completed", "last_seq": 4}

    def empty(h: Handler) -> None:
        sse_start(h)
        sse_end(h)

    fake.streams.append(empty)
    renderer, out = plain_renderer()
    assert Follower(client, renderer, "r1", after=4).run() == EXIT_OK
    assert out.getvalue() == "✓ run completed\n"


# -- commands ----------------------------------------------------------------------------------


def invoke(url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["--url", url, *args], env={"ONWARD_TOKEN": None})


def test_cli_chat_creates_a_conversation_and_renders_the_run(fake: FakeOnward) -> None:
    fake.routes[("POST", "/api/conversations")] = lambda h: send_json(
        h, 201, {"id": "c1", "title": "x"}
    )
    fake.routes[("POST", "/api/conversations/c1/runs")] = lambda h: send_json(h, 202, fake.run)

    def script(h: Handler) -> None:
        sse_start(h)
        sse_send(
            h, frame(1, "run.started") + frame(2, "message.delta", message_id="m", text="Hello!")
        )
        sse_send(h, frame(3, "run.completed"))
        sse_end(h)

    fake.streams.append(script)
    result = invoke(fake.url, "chat", "say hello")
    assert result.exit_code == 0, result.output
    assert result.stdout == "conversation c1\nrun r1\nHello!\n✓ run completed\n"
    posts = [r for r in fake.requests if r.method == "POST"]
    assert posts[0].body == {"title": "say hello"}
    assert posts[1].body == {"input": "say hello", "if_busy": "reject"}


def test_cli_chat_on_a_busy_conversation_suggests_interrupt(fake: FakeOnward) -> None:
    fake.routes[("POST", "/api/conversations/c1/runs")] = lambda h: error(
        h, 409, "conversation_busy", "busy"
    )
    result = invoke(fake.url, "chat", "-c", "c1", "hi")
    assert result.exit_code == EXIT_ERROR
    assert result.stderr == "error: busy (use --interrupt to stop it and send anyway)\n"


def test_cli_stop_reports_what_the_server_says(fake: FakeOnward) -> None:
    result = invoke(fake.url, "stop", "r1")
    assert (result.exit_code, result.stdout) == (0, "run r1: cancelling\n")
    fake.run = {**fake.run, "status": "completed"}
    result = invoke(fake.url, "stop", "r1")
    assert (result.exit_code, result.stdout) == (0, "run r1: already completed\n")


def test_cli_runs_table_keeps_ids_whole(fake: FakeOnward) -> None:
    long_id = "run_" + "x" * 70
    runs = [
        {
            "id": long_id,
            "conversation_id": "c1",
            "status": "running",
            "created_at": "2024-05-01T10:00:00",
            "last_seq": 12,
        },
        {
            "id": "r0",
            "conversation_id": "c1",
            "status": "failed",
            "created_at": "2024-04-30T09:00:00",
            "last_seq": 3,
        },
    ]
    fake.routes[("GET", "/api/runs")] = lambda h: send_json(h, 200, {"runs": runs})
    result = invoke(fake.url, "runs", "--active")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "conversation", "status", "created", "last_seq"]
    assert lines[1].split() == [long_id, "c1", "running", "2024-05-01", "10:00:00", "12"]
    assert fake.requests[-1].query == {"active": ["true"]}


def test_cli_errors_are_one_clean_line(fake: FakeOnward) -> None:
    result = invoke(closed_port_url(), "runs")
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.startswith(
        "error: the Onward server is not reachable at http://127.0.0.1:"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    result = invoke(fake.url, "attach", "nope")
    assert (result.exit_code, result.stderr) == (
        EXIT_ERROR,
        "error: no such thing: /api/runs/nope/stream\n",
    )
