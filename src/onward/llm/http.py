"""A small HTTP/1.1 client for LLM calls: one POST, a streamed body handed over per network read.

Design decision: LLM endpoints need very little of HTTP — POST a JSON body, read a chunked (or
sized, or close-delimited) response, TLS, keep-alive, a proxy from the environment — and the
stream is the hottest path of a busy server: every delta is a network read. Through the `openai`
SDK (httpx models over aiohttp) a request cost ~1 ms of CPU to build and send and each read ~10 µs
more than here, which at hundreds of concurrent runs was most of the server's one core. Responses
are parsed by httptools (llhttp, the C parser uvicorn uses); the protocol wakes the reader once per
read, never per byte or line.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ssl
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools

from onward import __version__

USER_AGENT = f"onward/{__version__}"
MAX_ERROR_BODY = 64 * 1024  # of an error response, enough for any message worth showing
PAUSE_AT = 1024 * 1024  # bytes received and not yet taken by the reader


class TransportError(Exception):
    """The request did not produce a complete response."""


class ConnectFailed(TransportError):
    def __init__(self, message: str, *, refused: bool = False, timeout: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
        self.timeout = timeout


class ReadTimeout(TransportError):
    """Nothing arrived for the read timeout."""


class ConnectionBroken(TransportError):
    """The connection closed (or sent garbage) before the response was complete."""

    def __init__(self, message: str, *, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response


class StatusError(Exception):
    """The server answered with a status other than 2xx; `body` is (the start of) its body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_port(self) -> str:
        """`host:port`, an IPv6 address in brackets (as CONNECT wants it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def authority(self) -> str:
        """What the Host header says: the port only when it is not the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        return self.host_port if self.port != default else self.host_port.rsplit(":", 1)[0]


def parse_origin(url: str) -> tuple[Origin, str]:
    """The origin of `url` and its path (without a trailing slash)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port), parts.path.rstrip("/")


def _proxy_for(origin: Origin) -> str | None:
    """The proxy the environment names for this origin (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`),
    unless `NO_PROXY` lists its host (a name, a domain suffix, `*`)."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(origin.scheme) or proxies.get("all")
    if not proxy or _bypassed(origin, proxies.get("no", "")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _proxy_problem(proxy: str | None) -> str | None:
    """Why `proxy` cannot be used (said when a connection is wanted), or None."""
    if proxy is None or urlsplit(proxy).scheme.lower() == "http":
        return None
    return (
        f"the proxy {proxy!r} (from HTTP(S)_PROXY/ALL_PROXY) is not an http:// proxy, the only kind "
        "Onward's LLM client speaks; set HTTPS_PROXY to an http:// proxy or list the LLM host in NO_PROXY"
    )


def _basic_auth(proxy_url: str) -> str | None:
    """`user:password` of a proxy URL, as the value of a Basic Proxy-Authorization header."""
    parts = urlsplit(proxy_url)
    if not parts.username:
        return None
    user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return base64.b64encode(user.encode()).decode()


def _bypassed(origin: Origin, no_proxy: str) -> bool:
    host = origin.host.lower()
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        if port and port != str(origin.port):
            continue
        name = name.lstrip("*").lstrip(".").strip("[]")  # "*.corp", ".corp", "[::1]"
        if host == name or host.endswith("." + name):
            return True
    return False


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._raw: bytearray | None = None  # the proxy's reply to CONNECT, before the tunnel is up
        self._reset()

    def _reset(self) -> None:
        self.parser: Any = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self._interim = False
        self.complete = False
        self.keep_alive = False  # read when the message completes: llhttp forgets it right after
        self.error: BaseException | None = None
        self.received = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0

    # asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        if self._raw is not None:
            self._raw += data
            self._wake()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionBroken(f"malformed HTTP response: {exc}"))
            return
        if self._buffered > PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._raw is not None:
            self._wake()  # the proxy hung up before the tunnel was up: tunnel() says so
        elif self.headers_done and not self.complete and self._ends_at_close() and exc is None and self.error is None:
            self.complete = True  # a body without length or chunking ends with the connection (not a reset)
            self._wake()
        elif not self.complete:
            detail = f": {exc}" if exc else ""
            self._fail(ConnectionBroken(f"the server closed the connection{detail}", before_response=not self.received))
        self._stop_timer()

    # httptools callbacks -------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim response (100 Continue, 103 Early Hints): the real one follows
            self._interim = True
            self.headers = {}
            return
        self.status = status
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.keep_alive = bool(self.parser.should_keep_alive())
        self._stop_timer()

    # used by the client ----------------------------------------------------------

    def _ends_at_close(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._wake()
        self.close()

    def close(self) -> None:
        self._stop_timer()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def watch(self, timeout: float) -> None:
        """Fail with ReadTimeout when nothing arrives for `timeout` s (one timer per response,
        moved only when it fires: re-arming it on every read would cost more than the read)."""
        self._timeout = timeout
        self._last_read = self.loop.time()
        self._timer = self.loop.call_at(self._last_read + timeout, self._check_idle)

    def _check_idle(self) -> None:
        if self._paused:  # we stopped reading (the reader is behind): the server is not silent
            self._last_read = self.loop.time()
        due = self._last_read + self._timeout
        if self.loop.time() >= due - 0.001:
            self._timer = None
            self._fail(ReadTimeout(f"nothing arrived for {self._timeout:g} s"))
        else:
            self._timer = self.loop.call_at(due, self._check_idle)

    async def wait(self) -> None:
        """Until something happened (data, the end, an error)."""
        if self.error is not None:
            raise self.error
        waiter = self._waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self.error is not None:
            raise self.error

    def take(self) -> list[bytes]:
        chunks = list(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return chunks

    def begin(self, request: bytes, timeout: float) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(request)
        self.watch(timeout)

    def reusable(self) -> bool:
        # not while reading is paused: the next response on it would never be read
        return self.complete and not self.closed and self.error is None and self.keep_alive and not self._paused

    async def tunnel(self, authority: str, auth: str | None) -> None:
        """Ask an HTTP proxy to open a tunnel to `authority` (CONNECT)."""
        assert self.transport is not None
        self._raw = bytearray()
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if auth:
            head += f"Proxy-Authorization: Basic {auth}\r\n"
        self.transport.write((head + "\r\n").encode("latin-1"))
        while b"\r\n\r\n" not in self._raw:
            if self.closed:
                raise ConnectFailed(f"the proxy closed the connection instead of opening a tunnel to {authority}")
            await self.wait()
        reply, _, extra = bytes(self._raw).partition(b"\r\n\r\n")
        status_line = reply.split(b"\r\n", 1)[0].decode("latin-1")
        self._raw = None
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "200":
            raise ConnectFailed(f"the proxy refused a tunnel to {authority}: {status_line}")
        if extra:  # TLS speaks first, from our side: nothing may come through the tunnel before it
            raise ConnectFailed(f"the proxy sent data through the tunnel to {authority} before TLS began")


class Response:
    """A response whose status and headers have arrived; the body is read with `chunks()`."""

    def __init__(self, client: HttpClient, conn: _Connection) -> None:
        self._client = client
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers
        self._done = False

    async def chunks(self) -> AsyncIterator[list[bytes]]:
        """The body as it arrives: every piece received since the last step, once per wake-up."""
        conn = self._conn
        while True:
            pieces = conn.take()
            if pieces:
                yield pieces
                continue
            if conn.error is not None:  # before `complete`: a timeout or reset is never a clean end
                raise conn.error
            if conn.complete:
                return
            await conn.wait()

    async def read(self, limit: int) -> bytes:
        """The whole body, up to `limit` bytes (the rest is dropped with the connection)."""
        out = bytearray()
        async for pieces in self.chunks():
            for piece in pieces:
                out += piece
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    @property
    def complete(self) -> bool:
        return self._conn.complete

    def close(self) -> None:
        """Give the connection back for the next request if the body was read in full, else close it."""
        if self._done:
            return
        self._done = True
        self._client._release(self._conn)


class HttpClient:
    """Connections to one origin, kept alive between requests (at most `max_idle` idle ones).

    Idle connections are never more than the most requests that were in flight at once; one the
    server closed meanwhile is dropped when it would be used."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        max_idle: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin, self.base_path = parse_origin(base_url)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: collections.deque[_Connection] = collections.deque()
        self._closed = False
        self._ssl = ssl_context
        self._proxy = _proxy_for(self.origin)
        self._proxy_problem = _proxy_problem(self._proxy)
        self._proxy_auth = _basic_auth(self._proxy) if self._proxy else None
        head = {"Host": self.origin.authority, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if self._proxy_auth and self.origin.scheme == "http":  # https: sent with CONNECT instead
            head["Proxy-Authorization"] = f"Basic {self._proxy_auth}"
        head.update(headers or {})
        self._head = "".join(f"{k}: {v}\r\n" for k, v in head.items())

    async def post(self, path: str, body: bytes, *, accept: str = "application/json") -> Response:
        """POST `body` (JSON) to base_path + path; returns once the status and headers arrived.

        Raises StatusError (any status but 2xx, with the start of the body), ConnectFailed, ReadTimeout
        or ConnectionBroken. A kept-alive connection that the server had closed meanwhile (nothing
        of the response arrived) is replaced by the next idle one, or a new one.
        """
        target = self.base_path + path
        if self._proxy and self.origin.scheme == "http":
            target = f"http://{self.origin.authority}{target}"  # a forward proxy takes absolute URLs
        request = (
            f"POST {target} HTTP/1.1\r\n{self._head}Content-Type: application/json\r\nAccept: {accept}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        while True:
            conn, reused = await self._connection()
            try:
                conn.begin(request, self.read_timeout)
                while not conn.headers_done:
                    await conn.wait()
            except ConnectionBroken as exc:
                conn.close()
                if reused and exc.before_response:
                    continue  # the server closed an idle connection just as we used it
                raise
            except BaseException:
                conn.close()
                raise
            response = Response(self, conn)
            if not 200 <= conn.status < 300:  # a redirect is an error too: POSTs are not followed
                try:
                    error_body = await response.read(MAX_ERROR_BODY)
                except TransportError:
                    error_body = b""
                finally:
                    response.close()
                raise StatusError(conn.status, conn.headers, error_body)
            return response

    async def _connection(self) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
        return await self._connect(), False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = self.origin
        tls = self._ssl_context() if origin.scheme == "https" else None
        host, port = origin.host, origin.port
        proxy = urlsplit(self._proxy) if self._proxy else None
        if self._proxy_problem:
            raise ConnectFailed(self._proxy_problem)
        if proxy is not None:
            host, port = proxy.hostname or "", proxy.port or 80
        try:
            async with asyncio.timeout(self.connect_timeout):
                if proxy is None:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop), host, port, ssl=tls, server_hostname=origin.host if tls else None
                    )
                    return conn
                _, conn = await loop.create_connection(lambda: _Connection(loop), host, port)
                if tls is not None:
                    try:
                        await conn.tunnel(origin.host_port, self._proxy_auth)
                        assert conn.transport is not None
                        conn.transport = await loop.start_tls(
                            conn.transport, conn, tls, server_hostname=origin.host
                        )
                    except BaseException:
                        conn.close()
                        raise
                return conn
        except TimeoutError as exc:
            where = f"the proxy {host}:{port}" if proxy else f"{origin.host}:{origin.port}"
            raise ConnectFailed(f"could not connect to {where} within {self.connect_timeout:g} s", timeout=True) from exc
        except ConnectionRefusedError as exc:
            raise ConnectFailed(f"{host}:{port} refused the connection", refused=True) from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"could not connect to {host}:{port}: {exc}") from exc

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR
            with contextlib.suppress(ImportError, OSError):
                import certifi  # the bundle httpx and the SDKs use, beside the system's

                self._ssl.load_verify_locations(certifi.where())
        return self._ssl

    def _release(self, conn: _Connection) -> None:
        if conn.reusable() and len(self._idle) < self.max_idle and not self._closed:
            conn._stop_timer()
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True  # responses still being read close their connections when done
        while self._idle:
            self._idle.pop().close()
