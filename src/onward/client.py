"""A small synchronous client of Onward's HTTP API, used by the CLI and by scripts.

The design decision: a run is read as a log, not as a connection. `stream()` remembers the last
`seq` it yielded and, whenever the SSE connection drops, goes quiet or ends early, reconnects with
backoff sending `Last-Event-ID` (and `?after=`) with that seq, and drops anything at or below it —
so a caller sees every event exactly once, in order, however often the network fails.
Server errors (`{"error": {"code", "message"}}`) become the matching `OnwardError` subclass.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from onward.core.events import TERMINAL_TYPES
from onward.core.runs import TERMINAL_STATUSES
from onward.credentials import stored_token
from onward.errors import (
    AccountDisabled,
    BadRequest,
    ConfigError,
    Conflict,
    ConversationBusy,
    CsrfFailed,
    Forbidden,
    InvalidCredentials,
    LLMError,
    NotFound,
    OnwardError,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"

_BY_CODE: dict[str, type[OnwardError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        InvalidCredentials,
        AccountDisabled,
        Forbidden,
        CsrfFailed,
        NotFound,
        Conflict,
        ConversationBusy,
        PayloadTooLarge,
        TooManyRequests,
        Unavailable,
        ConfigError,
        LLMError,
    )
}
_BY_STATUS: dict[int, type[OnwardError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: BadRequest,
    429: TooManyRequests,
    503: Unavailable,
}
# Statuses worth reconnecting through while following a stream (a restarting or overloaded server).
_RETRY_STATUSES = frozenset({502, 503, 504})


class ServerUnreachable(Unavailable):
    """The Onward server is not reachable; start it with `onward serve`."""

    code = "unreachable"


def default_url() -> str:
    """The server's base URL: ONWARD_URL, else http://127.0.0.1:8000."""
    return os.environ.get("ONWARD_URL") or DEFAULT_URL


def error_from_response(status: int, body: bytes) -> OnwardError:
    """The OnwardError a server error response stands for, carrying the server's own message."""
    payload: Any = None
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    code: str | None = None
    message: str | None = None
    extra: dict[str, Any] = {}
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        message = str(err["message"]) if err.get("message") is not None else None
        extra = {k: v for k, v in err.items() if k not in ("code", "message")}
    elif isinstance(payload, dict) and "detail" in payload:  # a framework-level error (FastAPI)
        message = _detail_message(payload["detail"])
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {text[:300]}" if text else "")
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status) or OnwardError
    if cls is Unauthorized:
        message += " (log in with `onward login`, or set ONWARD_TOKEN)"
    exc = cls(message, **extra)
    if cls is OnwardError:
        exc.status_code = status
    return exc


def _detail_message(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(
                    f"{loc}: {item.get('msg', item)}" if loc else str(item.get("msg", item))
                )
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched server-sent event."""

    event: str
    data: str
    id: str | None


_EOL = re.compile(r"\r\n|\r|\n")


class SSEParser:
    """An incremental parser of the text/event-stream format (WHATWG HTML, "server-sent events").

    Feed it raw bytes in chunks of any size; it returns the events completed by each chunk.
    Comment lines (`:` heartbeats) are skipped; an event is dispatched at a blank line, and only
    if it has data; a partial event at the end of a dropped connection is never dispatched.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False  # the previous chunk ended in "\r": a leading "\n" belongs to it
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buf = self._buffer + text
        out: list[SSEMessage] = []
        start = 0
        for match in _EOL.finditer(buf):
            if match.group() == "\r" and match.end() == len(buf):
                self._skip_lf = True
            message = self._line(buf[start : match.start()])
            if message is not None:
                out.append(message)
            start = match.end()
        self._buffer = buf[start:]
        return out

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry":
            if value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEMessage(event=event or "message", data="\n".join(data), id=self.last_id)


def _decode_event(message: SSEMessage) -> dict[str, Any] | None:
    """The run event an SSE message carries, or None for anything that is not one."""
    try:
        event = json.loads(message.data)
    except ValueError:
        logger.warning("ignoring an SSE message whose data is not JSON: %.200r", message.data)
        return None
    if not isinstance(event, dict):
        return None
    if not isinstance(event.get("seq"), int):
        if message.id is None or not message.id.isdigit():
            return None
        event["seq"] = int(message.id)
    if not isinstance(event.get("type"), str):
        event["type"] = message.event
    return event


def _obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise OnwardError(f"unexpected response from the server: {str(body)[:200]}")
    return body


def _items(body: Any, *keys: str) -> list[dict[str, Any]]:
    """A list endpoint's items, whether the server answers a bare list or wraps it in an object."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in (*keys, "items"):
            if isinstance(body.get(key), list):
                return list(body[key])
    raise OnwardError(f"unexpected response from the server: {str(body)[:200]}")


class OnwardClient:
    """Onward's HTTP API. Base URL from ONWARD_URL; the token as given, else ONWARD_TOKEN, else the
    one `onward login` stored for this URL (see `onward.credentials`).

    Use as a context manager, or call `close()`. Every method raises an `OnwardError` subclass on
    failure; `ServerUnreachable` when nothing answers at the base URL.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        stream_read_timeout: float = 45.0,
        reconnect_initial: float = 0.25,
        reconnect_max: float = 5.0,
        reconnect_timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or default_url()).rstrip("/")
        token = token if token is not None else os.environ.get("ONWARD_TOKEN") or None
        if token is None:
            token = stored_token(self.base_url)
        headers = {"Accept": "application/json", "User-Agent": "onward-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        # Three missed heartbeats (15 s apart) mean the connection is dead even if no FIN came.
        self._stream_timeout = httpx.Timeout(
            timeout, connect=min(timeout, 5.0), read=stream_read_timeout
        )
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.reconnect_timeout = reconnect_timeout
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=self._timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OnwardClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- accounts ------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        return _obj(self._json("GET", "/api/auth/me"))

    def create_token_with_password(self, username: str, password: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Log in, create an API token, log out again: (the user, the new token with `token`)."""
        login = _obj(self._json("POST", "/api/auth/login", json={"username": username, "password": password}))
        csrf = {"X-CSRF-Token": str(login.get("csrf_token", ""))}
        try:
            token = _obj(self._json("POST", "/api/tokens", json={"name": name}, headers=csrf))
        finally:
            try:
                self._json("POST", "/api/auth/logout", headers=csrf)
            except OnwardError:
                pass
            self._http.cookies.clear()
        return dict(login.get("user") or {}), token

    def revoke_token(self, token_id: str) -> None:
        self._json("DELETE", f"/api/tokens/{_seg(token_id)}")

    # -- conversations -------------------------------------------------------------------------

    def create_conversation(self, title: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {} if title is None else {"title": title}
        return _obj(self._json("POST", "/api/conversations", json=body))

    def list_conversations(self) -> list[dict[str, Any]]:
        return _items(self._json("GET", "/api/conversations"), "conversations")

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        return _obj(self._json("GET", f"/api/conversations/{_seg(conversation_id)}"))

    # -- runs ----------------------------------------------------------------------------------

    def start_run(
        self,
        conversation_id: str,
        input: str,
        model: str | None = None,
        if_busy: str = "reject",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": input, "if_busy": if_busy}
        if model is not None:
            body["model"] = model
        path = f"/api/conversations/{_seg(conversation_id)}/runs"
        return _obj(self._json("POST", path, json=body))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return _obj(self._json("GET", f"/api/runs/{_seg(run_id)}"))

    def list_runs(self, active: bool | None = None) -> list[dict[str, Any]]:
        params = {} if active is None else {"active": "true" if active else "false"}
        return _items(self._json("GET", "/api/runs", params=params), "runs")

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return _obj(self._json("POST", f"/api/runs/{_seg(run_id)}/cancel"))

    def events(
        self,
        run_id: str,
        after: int = 0,
        limit: int | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """One long-poll: `{events, last_seq, status}` with the events after `after`."""
        params: dict[str, Any] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        if wait is not None:
            params["wait"] = wait
        # A long-poll may legitimately stay silent for `wait` seconds.
        timeout = httpx.Timeout((self._timeout.read or 30.0) + (wait or 0), connect=5.0)
        path = f"/api/runs/{_seg(run_id)}/events"
        return _obj(self._json("GET", path, params=params, timeout=timeout))

    def stream(
        self,
        run_id: str,
        after: int = 0,
        *,
        stop: threading.Event | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every event of the run after `after`, exactly once and in order, until the terminal one.

        Reconnects (with backoff) through dropped connections, silent connections, early ends and
        502/503/504, resuming from the last seq yielded. Gives up with `ServerUnreachable` after
        `reconnect_timeout` seconds without a successful connection; raises at once if the first
        connection fails or the server answers another error (404 …). Ends early, without error,
        if the run is already finished and has no event after the last one yielded, or when
        `stop` is set.
        """
        last = after
        resumed = False  # a first connection succeeded: failures from now on are retried
        failures = 0
        give_up_at: float | None = None
        path = f"/api/runs/{_seg(run_id)}/stream"
        retry_hint: float | None = None
        while stop is None or not stop.is_set():
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if resumed:
                headers["Last-Event-ID"] = str(last)
            ended_cleanly = False
            try:
                with self._http.stream(
                    "GET",
                    path,
                    params={"after": last},
                    headers=headers,
                    timeout=self._stream_timeout,
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        error = error_from_response(response.status_code, response.content)
                        if not (resumed and response.status_code in _RETRY_STATUSES):
                            raise error
                        logger.info("stream of run %s: %s; retrying", run_id, error.message)
                    else:
                        resumed = True
                        failures, give_up_at = 0, None
                        parser = SSEParser()
                        for chunk in response.iter_bytes():
                            messages = parser.feed(chunk)
                            if parser.retry_ms is not None:
                                retry_hint = parser.retry_ms / 1000
                            for message in messages:
                                event = _decode_event(message)
                                if event is None or event["seq"] <= last:
                                    continue
                                last = event["seq"]
                                yield event
                                if event["type"] in TERMINAL_TYPES:
                                    return
                            if stop is not None and stop.is_set():
                                return
                        ended_cleanly = True
            except httpx.TransportError as exc:
                if not resumed:
                    raise self._transport_error(exc) from exc
                logger.info("stream of run %s dropped after seq %d: %r", run_id, last, exc)
            if stop is not None and stop.is_set():
                return
            if ended_cleanly and self._finished_at_or_before(run_id, last):
                return
            now = time.monotonic()
            if give_up_at is None:
                give_up_at = now + self.reconnect_timeout
            elif now >= give_up_at:
                raise ServerUnreachable(
                    f"lost the connection to {self.base_url} while following run {run_id}; "
                    f"re-attach with: onward attach {run_id} --after {last}"
                )
            base = retry_hint if retry_hint is not None else self.reconnect_initial
            delay = min(self.reconnect_max, base * 2**failures)
            failures += 1
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)

    def _finished_at_or_before(self, run_id: str, last: int) -> bool:
        """Whether the run is over with no event after `last` (so the stream has nothing more)."""
        try:
            run = self.get_run(run_id)
        except OnwardError:  # let the next stream request (which reports errors) decide
            return False
        last_seq = run.get("last_seq")
        return (
            run.get("status") in TERMINAL_STATUSES
            and isinstance(last_seq, int)
            and last_seq <= last
        )

    # -- plumbing ------------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.RemoteProtocolError:
                if method != "GET":
                    raise
                # A kept-alive connection the server had just closed: safe to ask again once.
                response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise OnwardError(
                f"the server at {self.base_url} answered {method} {path} with something that is "
                "not JSON; is ONWARD_URL pointing at Onward?"
            ) from exc

    def _transport_error(self, exc: httpx.TransportError) -> OnwardError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ServerUnreachable(
                f"the Onward server is not reachable at {self.base_url}; start it with "
                "`onward serve` (or point ONWARD_URL / --url at it)"
            )
        return OnwardError(f"request to {self.base_url} failed: {exc!r}")


def _seg(value: str) -> str:
    return quote(value, safe="")
