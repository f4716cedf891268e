"""The LLM HTTP client (onward.llm.http) against real sockets: framing, keep-alive, errors, proxies, TLS.

Each test starts tiny in-test HTTP servers (asyncio.start_server on 127.0.0.1, port 0) that record
every accepted connection and every request, and answer with a per-test handler writing raw bytes,
so each framing and failure is produced exactly. Nothing of the client is mocked. Waits are on
observable state (a request recorded, the server reading EOF), never on a sleep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from onward.llm.http import (
    MAX_ERROR_BODY,
    PAUSE_AT,
    ConnectFailed,
    ConnectionBroken,
    HttpClient,
    ReadTimeout,
    Response,
    StatusError,
)

BODY = b'{"model": "test-model", "stream": true}'
PATH = "/chat/completions"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
OPENSSL = "/usr/bin/openssl"

# -- raw HTTP responses ----------------------------------------------------------------------


def chunked_head(status: int = 200) -> bytes:
    return (
        f"HTTP/1.1 {status} OK\r\nContent-Type: text/event-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def sized(body: bytes, status: int = 200, headers: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


OK = sized(b'{"ok": true}')

# -- the in-test server ------------------------------------------------------------------------


@dataclass
class Request:
    line: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Conn:
    """One accepted connection, as the server saw it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Request] = field(default_factory=list)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)  # the client closed its end


Handler = Callable[[Request, Conn], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *fields = head[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for header in fields:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(line, headers, body)


class Server:
    """An HTTP/1.1 server answering each request with `handler(request, conn)`; after the
    handler returns it reads the next request on the connection unless the handler closed it."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections: list[Conn] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[Request]:
        return [request for conn in self.connections for request in conn.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(reader, writer)
        self.connections.append(conn)
        try:
            while not writer.is_closing():
                request = await read_request(reader)
                if request is None:
                    break
                conn.requests.append(request)
                await self.handler(request, conn)
        except (ConnectionError, ssl.SSLError):
            conn.hung_up.set()
        except BaseException as exc:  # surfaced by the fixture: a broken handler is a broken test
            self.errors.append(exc)
            raise
        finally:
            if reader.at_eof():
                conn.hung_up.set()
            writer.close()
            self._tasks.discard(task)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in self.connections:
            conn.writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(5):
                    await conn.writer.wait_closed()
        await self._server.wait_closed()
        self.errors = [e for e in self.errors if not isinstance(e, asyncio.CancelledError)]


Serve = Callable[..., Awaitable[Server]]
MakeClient = Callable[..., HttpClient]


@pytest.fixture(autouse=True)
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client reads proxies from the environment: start every test from none."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts a Server per call; closes them all after the test, and fails it if a handler broke."""
    servers: list[Server] = []

    async def start(handler: Handler, *, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(handler, tls)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()
    assert [e for server in servers for e in server.errors] == []


@pytest.fixture
async def make_client(serve: Serve) -> AsyncIterator[MakeClient]:
    """Makes HttpClients; closed after the test, before the servers (hence the `serve` dependency)."""
    clients: list[HttpClient] = []

    def make(base_url: str, **options: Any) -> HttpClient:
        options.setdefault("connect_timeout", 5.0)
        options.setdefault("read_timeout", 5.0)
        client = HttpClient(base_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def unused_port() -> Iterator[int]:
    """A port bound (so nobody else takes it) but not listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# -- handlers and helpers ----------------------------------------------------------------------


async def answer_ok(request: Request, conn: Conn) -> None:
    conn.writer.write(OK)


async def until_hung_up(conn: Conn) -> None:
    """Wait for the client to close (nothing more is read: the request loop sees the EOF)."""
    await conn.reader.read()


async def read_all(response: Response) -> bytes:
    try:
        return await response.read(1 << 30)
    finally:
        response.close()


async def post_and_read(client: HttpClient) -> bytes:
    return await read_all(await client.post(PATH, BODY))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def tunnel_to(port: int) -> Handler:
    """A CONNECT proxy's handler: open a tunnel to 127.0.0.1:`port` and pipe both ways."""

    async def handle(request: Request, conn: Conn) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            conn.writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            async with asyncio.TaskGroup() as group:
                group.create_task(pipe(conn.reader, up_writer))
                group.create_task(pipe(up_reader, conn.writer))
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()
        conn.writer.close()

    return handle


# -- response framing --------------------------------------------------------------------------


async def test_chunked_stream_arrives_complete_and_in_order(serve: Serve, make_client: MakeClient) -> None:
    pieces = [f"data: piece {i}\n\n".encode() for i in range(5)]
    taken: asyncio.Queue[None] = asyncio.Queue()

    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(chunked_head())
        for piece in pieces:
            conn.writer.write(chunk(piece))
            await conn.writer.drain()
            await taken.get()  # the client has this piece: the next is a separate network read
        conn.writer.write(LAST_CHUNK)

    server = await serve(handle)
    response = await make_client(server.url).post(PATH, BODY, accept="text/event-stream")
    received: list[bytes] = []
    try:
        assert response.status == 200
        assert response.headers["transfer-encoding"] == "chunked"
        async for batch in response.chunks():
            assert not response.complete  # the last chunk is sent only after this one is taken
            received.append(b"".join(batch))
            taken.put_nowait(None)
        assert response.complete
    finally:
        response.close()
    assert received == pieces
    assert server.requests[0].headers["accept"] == "text/event-stream"


async def test_content_length_body_is_read_in_full(serve: Serve, make_client: MakeClient) -> None:
    body = os.urandom(3 * 1024 * 1024)  # many network reads, more than the client buffers unread

    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(sized(body))

    server = await serve(handle)
    response = await make_client(server.url).post(PATH, BODY)
    assert response.headers["content-length"] == str(len(body))
    assert await read_all(response) == body
    assert response.complete


async def test_a_reader_that_falls_behind_is_not_timed_out(serve: Serve, make_client: MakeClient) -> None:
    """More than the client buffers arrives while nobody reads: it stops reading from the socket,
    and the silence that follows is its own doing, not the server's."""
    body = os.urandom(3 * 1024 * 1024)

    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(sized(body))

    server = await serve(handle)
    response = await make_client(server.url, read_timeout=0.3).post(PATH, BODY)
    await asyncio.sleep(0.8)  # the reader is busy elsewhere for longer than the read timeout
    assert await read_all(response) == body


async def test_close_delimited_body_is_read_in_full(serve: Serve, make_client: MakeClient) -> None:
    body = os.urandom(512 * 1024)

    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + body)
        conn.writer.close()  # no length, no chunking: the end of the connection is the end of the body

    server = await serve(handle)
    response = await make_client(server.url).post(PATH, BODY)
    assert await read_all(response) == body
    assert response.complete


# -- requests and keep-alive -------------------------------------------------------------------


async def test_sequential_posts_share_one_connection(serve: Serve, make_client: MakeClient) -> None:
    server = await serve(answer_ok)
    client = make_client(server.url, headers={"Authorization": "Bearer sk-test"})
    assert await post_and_read(client) == b'{"ok": true}'
    assert await post_and_read(client) == b'{"ok": true}'
    assert len(server.connections) == 1
    assert len(server.connections[0].requests) == 2


async def test_request_line_headers_and_body(serve: Serve, make_client: MakeClient) -> None:
    server = await serve(answer_ok)
    await post_and_read(make_client(server.url, headers={"Authorization": "Bearer sk-test"}))
    (request,) = server.requests
    assert request.line == "POST /v1/chat/completions HTTP/1.1"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(BODY))
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["user-agent"].startswith("onward/")
    assert request.body == BODY


async def test_no_authorization_header_unless_given(serve: Serve, make_client: MakeClient) -> None:
    server = await serve(answer_ok)
    await post_and_read(make_client(server.url))
    assert "authorization" not in server.requests[0].headers


async def test_connection_closed_while_idle_is_replaced(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(OK)  # complete, keep-alive (HTTP/1.1, sized) ...
        if len(server.connections) == 1:
            conn.writer.close()  # ... and then closed while the client holds it idle

    server = await serve(handle)
    client = make_client(server.url)
    await post_and_read(client)
    await server.connections[0].writer.wait_closed()
    # The client may or may not have seen the close yet; either way the next post must succeed.
    assert await post_and_read(client) == b'{"ok": true}'
    assert [len(conn.requests) for conn in server.connections] == [1, 1]


async def test_connection_closed_as_it_is_reused_is_retried(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        if len(conn.requests) == 2:
            conn.writer.close()  # the second request on the kept-alive connection: hang up, no answer
        else:
            conn.writer.write(OK)

    server = await serve(handle)
    client = make_client(server.url)
    await post_and_read(client)
    assert await post_and_read(client) == b'{"ok": true}'
    assert [len(conn.requests) for conn in server.connections] == [2, 1]


async def test_connection_close_response_is_not_reused(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(sized(b"{}", headers="Connection: close\r\n"))
        await until_hung_up(conn)  # the client, told so, must close it

    server = await serve(handle)
    client = make_client(server.url)
    await post_and_read(client)
    async with asyncio.timeout(5):
        await server.connections[0].hung_up.wait()
    await post_and_read(client)
    assert len(server.connections) == 2


async def test_concurrent_posts_use_separate_connections_then_reuse_them(
    serve: Serve, make_client: MakeClient
) -> None:
    both_arrived = asyncio.Event()

    async def handle(request: Request, conn: Conn) -> None:
        if len(server.requests) == 2:
            both_arrived.set()
        await both_arrived.wait()  # neither is answered before the other is in: two at once
        conn.writer.write(OK)

    server = await serve(handle)
    client = make_client(server.url)
    first, second = await asyncio.gather(post_and_read(client), post_and_read(client))
    assert first == second == b'{"ok": true}'
    await post_and_read(client)
    await post_and_read(client)
    assert len(server.connections) == 2
    assert len(server.requests) == 4


async def test_at_most_max_idle_connections_are_kept_for_the_next_burst(
    serve: Serve, make_client: MakeClient
) -> None:
    arrived = asyncio.Condition()

    async def handle(request: Request, conn: Conn) -> None:
        burst = (len(server.requests) + 2) // 3  # 1 for requests 1-3, 2 for 4-6
        async with arrived:  # three in flight at once, then all three answered
            arrived.notify_all()
            await arrived.wait_for(lambda: len(server.requests) >= 3 * burst)
        conn.writer.write(OK)

    server = await serve(handle)
    client = make_client(server.url, max_idle=2)
    for _ in range(2):
        assert await asyncio.gather(*(post_and_read(client) for _ in range(3))) == [b'{"ok": true}'] * 3
    # the second burst reused the two connections kept idle and opened one more
    assert len(server.connections) == 4
    assert sorted(len(conn.requests) for conn in server.connections) == [1, 1, 2, 2]


async def test_closing_an_unfinished_response_drops_the_connection(
    serve: Serve, make_client: MakeClient
) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(chunked_head() + chunk(b"data: first\n\n"))
        await until_hung_up(conn)

    server = await serve(handle)
    client = make_client(server.url)
    response = await client.post(PATH, BODY)
    async for batch in response.chunks():
        assert b"".join(batch) == b"data: first\n\n"
        break
    assert not response.complete
    response.close()
    async with asyncio.timeout(5):
        await server.connections[0].hung_up.wait()
    second = await client.post(PATH, BODY)
    second.close()
    assert len(server.connections) == 2


# -- error statuses ----------------------------------------------------------------------------


async def test_error_status_raises_with_headers_and_body(serve: Serve, make_client: MakeClient) -> None:
    error = b'{"error": {"message": "slow down"}}'

    async def handle(request: Request, conn: Conn) -> None:
        if len(server.requests) == 1:
            conn.writer.write(sized(error, status=429, headers="Retry-After: 7\r\n"))
        else:
            conn.writer.write(OK)

    server = await serve(handle)
    client = make_client(server.url)
    with pytest.raises(StatusError) as raised:
        await client.post(PATH, BODY)
    assert raised.value.status == 429
    assert raised.value.headers["retry-after"] == "7"
    assert raised.value.body == error
    await post_and_read(client)  # the error body was read in full: the connection is kept
    assert len(server.connections) == 1


async def test_error_body_is_capped(serve: Serve, make_client: MakeClient) -> None:
    error = os.urandom(MAX_ERROR_BODY + 10_000)

    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(sized(error, status=500))

    server = await serve(handle)
    with pytest.raises(StatusError) as raised:
        await make_client(server.url).post(PATH, BODY)
    assert raised.value.status == 500
    assert raised.value.body == error[:MAX_ERROR_BODY]


# -- transport failures ------------------------------------------------------------------------


async def test_read_timeout_after_headers(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(chunked_head())
        await until_hung_up(conn)

    server = await serve(handle)
    response = await make_client(server.url, read_timeout=0.3).post(PATH, BODY)
    started = time.monotonic()
    try:
        with pytest.raises(ReadTimeout):
            await response.read(1 << 20)
    finally:
        response.close()
    assert 0.25 <= time.monotonic() - started < 3


async def test_read_timeout_when_nothing_arrives(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        await until_hung_up(conn)

    server = await serve(handle)
    client = make_client(server.url, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ReadTimeout):
        await client.post(PATH, BODY)
    assert 0.25 <= time.monotonic() - started < 3
    async with asyncio.timeout(5):
        await server.connections[0].hung_up.wait()  # the timed-out connection is closed


async def test_read_timeout_is_per_silence_not_per_response(
    serve: Serve, make_client: MakeClient
) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(chunked_head())
        for _ in range(12):  # 0.6 s in all, but never silent for more than 0.05 s
            await asyncio.sleep(0.05)
            conn.writer.write(chunk(b"."))
        conn.writer.write(LAST_CHUNK)

    server = await serve(handle)
    response = await make_client(server.url, read_timeout=0.3).post(PATH, BODY)
    assert await read_all(response) == b"." * 12


async def test_connect_refused(make_client: MakeClient, unused_port: int) -> None:
    client = make_client(f"http://127.0.0.1:{unused_port}/v1")
    with pytest.raises(ConnectFailed) as raised:
        await client.post(PATH, BODY)
    assert raised.value.refused
    assert not raised.value.timeout


async def test_server_closing_mid_body_breaks_the_response(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(chunked_head() + chunk(b"data: partial\n\n"))
        conn.writer.close()  # the terminating chunk never comes

    server = await serve(handle)
    response = await make_client(server.url).post(PATH, BODY)
    received = b""
    try:
        with pytest.raises(ConnectionBroken) as raised:
            async for batch in response.chunks():
                received += b"".join(batch)
    finally:
        response.close()
    assert received == b"data: partial\n\n"
    assert not raised.value.before_response
    assert not response.complete


async def test_malformed_response_breaks_the_connection(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(b"\x00\x01 this is not HTTP\r\n\r\n")
        await until_hung_up(conn)

    server = await serve(handle)
    with pytest.raises(ConnectionBroken, match="malformed"):
        await make_client(server.url).post(PATH, BODY)
    async with asyncio.timeout(5):
        await server.connections[0].hung_up.wait()


# -- proxies -----------------------------------------------------------------------------------


async def test_http_target_goes_to_the_proxy_in_absolute_form(
    serve: Serve, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await serve(answer_ok)
    proxy = await serve(answer_ok)  # answers itself instead of forwarding
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    assert await post_and_read(make_client(origin.url)) == b'{"ok": true}'
    (request,) = proxy.requests
    assert request.line == f"POST http://127.0.0.1:{origin.port}/v1/chat/completions HTTP/1.1"
    assert request.headers["host"] == f"127.0.0.1:{origin.port}"
    assert request.body == BODY
    assert "proxy-authorization" not in request.headers
    assert origin.connections == []


async def test_http_target_through_an_authenticated_proxy(
    serve: Serve, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await serve(answer_ok)
    proxy = await serve(answer_ok)
    monkeypatch.setenv("HTTP_PROXY", f"http://user:p%40ss@127.0.0.1:{proxy.port}")
    await post_and_read(make_client(origin.url))
    (request,) = proxy.requests
    assert base64.b64decode(request.headers["proxy-authorization"].removeprefix("Basic ")) == b"user:p@ss"


async def test_no_proxy_bypasses_the_proxy(
    serve: Serve, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await serve(answer_ok)
    proxy = await serve(answer_ok)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    await post_and_read(make_client(origin.url))
    assert origin.requests[0].line == "POST /v1/chat/completions HTTP/1.1"
    assert proxy.connections == []


# -- TLS ---------------------------------------------------------------------------------------


def stream_three_chunks() -> Handler:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(chunked_head())
        for i in range(3):
            conn.writer.write(chunk(f"data: {i}\n\n".encode()))
            await conn.writer.drain()
        conn.writer.write(LAST_CHUNK)

    return handle


STREAMED = b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_https_stream(
    serve: Serve, make_client: MakeClient, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    server = await serve(stream_three_chunks(), tls=server_tls)
    client = make_client(server.url, ssl_context=client_tls)
    assert await post_and_read(client) == STREAMED
    assert await post_and_read(client) == STREAMED
    assert len(server.connections) == 1  # kept alive over TLS too
    assert server.requests[0].line == "POST /v1/chat/completions HTTP/1.1"


async def test_https_rejects_an_untrusted_certificate(
    serve: Serve, make_client: MakeClient, server_tls: ssl.SSLContext
) -> None:
    server = await serve(stream_three_chunks(), tls=server_tls)
    untrusting = ssl.create_default_context()  # the system's CAs only
    with pytest.raises(ConnectFailed):
        await make_client(server.url, ssl_context=untrusting).post(PATH, BODY)


async def test_https_through_a_connect_proxy(
    serve: Serve,
    make_client: MakeClient,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin = await serve(stream_three_chunks(), tls=server_tls)
    proxy = await serve(tunnel_to(origin.port))
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:p%40ss@127.0.0.1:{proxy.port}")
    client = make_client(origin.url, ssl_context=client_tls)
    assert await post_and_read(client) == STREAMED
    (connect,) = proxy.requests
    assert connect.line == f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1"
    assert connect.headers["host"] == f"127.0.0.1:{origin.port}"
    assert connect.headers["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert origin.requests[0].line == "POST /v1/chat/completions HTTP/1.1"  # origin-form in a tunnel


async def test_proxy_refusing_the_tunnel(
    serve: Serve, make_client: MakeClient, client_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(request: Request, conn: Conn) -> None:
        conn.writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await until_hung_up(conn)

    proxy = await serve(refuse)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    client = make_client("https://127.0.0.1:9/v1", ssl_context=client_tls)
    with pytest.raises(ConnectFailed, match="refused a tunnel"):
        await client.post(PATH, BODY)
    async with asyncio.timeout(5):
        await proxy.connections[0].hung_up.wait()


async def _refuse_and_hang_up(request: Request, conn: Conn) -> None:
    conn.writer.write(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    conn.writer.close()


async def _hang_up(request: Request, conn: Conn) -> None:
    conn.writer.close()


async def _tunnel_with_data_first(request: Request, conn: Conn) -> None:
    conn.writer.write(b"HTTP/1.1 200 Connection established\r\n\r\nnot TLS")
    await until_hung_up(conn)


@pytest.mark.parametrize(
    ("proxy_handler", "message"),
    [
        (_refuse_and_hang_up, "refused a tunnel"),
        (_hang_up, "instead of opening a tunnel"),
        (_tunnel_with_data_first, "before TLS began"),
    ],
    ids=["refuses-and-hangs-up", "hangs-up", "sends-data-first"],
)
async def test_proxy_failing_the_tunnel(
    serve: Serve,
    make_client: MakeClient,
    client_tls: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
    proxy_handler: Handler,
    message: str,
) -> None:
    proxy = await serve(proxy_handler)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    client = make_client("https://127.0.0.1:9/v1", ssl_context=client_tls)
    with pytest.raises(ConnectFailed, match=message):
        await client.post(PATH, BODY)


async def test_proxy_silent_on_connect_times_out(
    serve: Serve, make_client: MakeClient, client_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never_answer(request: Request, conn: Conn) -> None:
        await until_hung_up(conn)

    proxy = await serve(never_answer)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    client = make_client("https://127.0.0.1:9/v1", ssl_context=client_tls, connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ConnectFailed, match="the proxy") as raised:
        await client.post(PATH, BODY)
    assert raised.value.timeout
    assert 0.25 <= time.monotonic() - started < 3
    async with asyncio.timeout(5):
        await proxy.connections[0].hung_up.wait()


# -- review fixes: unclean ends, interim and redirect statuses, paused reuse, proxies --------------


async def test_a_reset_during_a_close_delimited_body_is_an_error(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: partial")
        await conn.writer.drain()
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.writer.transport.abort()  # RST, not FIN: the body did not end, it broke

    server = await serve(handle)
    response = await make_client(server.url).post(PATH, BODY)
    with pytest.raises(ConnectionBroken):
        await read_all(response)


async def test_a_timeout_while_the_reader_is_busy_is_not_a_clean_end(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n")
        await until_hung_up(conn)

    server = await serve(handle)
    response = await make_client(server.url, read_timeout=0.2).post(PATH, BODY)
    await asyncio.sleep(0.5)  # busy elsewhere while the timeout fires
    with pytest.raises(ReadTimeout):
        await read_all(response)


async def test_an_interim_100_continue_is_skipped(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n" + OK)

    server = await serve(handle)
    response = await make_client(server.url).post(PATH, BODY)
    assert response.status == 200 and "x-interim" not in response.headers
    assert await read_all(response) == b'{"ok": true}'


async def test_a_redirect_is_an_error_with_its_location(serve: Serve, make_client: MakeClient) -> None:
    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(sized(b"", status=301, headers="Location: https://example.invalid/v1/chat/completions\r\n"))

    server = await serve(handle)
    with pytest.raises(StatusError) as raised:
        await make_client(server.url).post(PATH, BODY)
    assert raised.value.status == 301 and raised.value.headers["location"].startswith("https://example.invalid")


async def test_a_connection_with_reading_paused_is_not_reused(serve: Serve, make_client: MakeClient) -> None:
    """The read that pauses reading also completes the body (one byte over the limit: only the
    last byte can push it over), and nobody takes it."""
    body = os.urandom(PAUSE_AT + 1)

    async def handle(request: Request, conn: Conn) -> None:
        conn.writer.write(sized(body) if len(server.requests) == 1 else OK)

    server = await serve(handle)
    client = make_client(server.url, read_timeout=2)
    response = await client.post(PATH, BODY)
    async with asyncio.timeout(5):
        while not response.complete:  # until the client has it all, unread
            await response._conn.wait()
    response.close()
    assert await post_and_read(client) == b'{"ok": true}'  # not stuck on the paused connection
    assert len(server.connections) == 2


async def test_connect_names_an_ipv6_target_in_brackets(
    serve: Serve, make_client: MakeClient, client_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await serve(_refuse_and_hang_up)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    with pytest.raises(ConnectFailed, match="refused a tunnel"):
        await make_client("https://[::1]:8443/v1", ssl_context=client_tls).post(PATH, BODY)
    assert proxy.requests[0].line == "CONNECT [::1]:8443 HTTP/1.1"


async def test_a_proxy_that_is_not_http_is_refused_clearly(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5h://127.0.0.1:1080")
    with pytest.raises(ConnectFailed, match="not an http:// proxy"):
        await make_client("http://llm.example.invalid/v1").post(PATH, BODY)


@pytest.mark.parametrize("entry", ["*.corp.example", ".corp.example", "corp.example", "*"])
async def test_no_proxy_forms(
    entry: str, serve: Serve, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nobody listens: used, it would fail
    monkeypatch.setenv("NO_PROXY", entry)
    client = make_client("http://llm.corp.example/v1")
    assert client._proxy is None


async def test_a_closed_client_does_not_pool_the_connections_of_responses_still_open(
    serve: Serve, make_client: MakeClient
) -> None:
    server = await serve(answer_ok)
    client = make_client(server.url)
    response = await client.post(PATH, BODY)
    await client.aclose()
    assert await read_all(response) == b'{"ok": true}'  # read in full, then closed, not pooled
    async with asyncio.timeout(5):
        await server.connections[0].hung_up.wait()
