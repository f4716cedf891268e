"""The benchmark's client: Onward's public HTTP API; REST calls over httpx, SSE over a lean reader.

A Python client can itself cap what it measures. SSE streams are read with `rawhttp` (a callback
per network read, no task switch) and parsed without decoding JSON on the hot path: frames are
split on blank lines, `seq` comes from the `id:` line and the type from the `event:` line. The
event JSON is kept as bytes; `event_ts` pulls the server's `ts` out of it without a full parse,
and `event_json` parses it when a scenario needs the data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench import rawhttp

TERMINAL = frozenset({"run.completed", "run.cancelled", "run.failed", "run.interrupted"})


@dataclass(slots=True)
class Frame:
    """One SSE event as received: its seq and type, the event JSON (bytes) and when it arrived."""

    seq: int
    type: str
    data: bytes
    received: float  # time.time() when the read that completed this frame returned

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


class SseParser:
    """Incremental parser for Onward's frames (`id: N` / `event: T` / `data: JSON`, blank line)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes, received: float) -> list[Frame]:
        buf = self._buf + chunk if self._buf else chunk
        parts = buf.split(b"\n\n")
        self._buf = parts.pop()
        out: list[Frame] = []
        for part in parts:
            if not part.startswith(b"id: "):
                continue  # ": connected", ": heartbeat"
            nl1 = part.index(b"\n")
            nl2 = part.index(b"\n", nl1 + 1)
            out.append(Frame(int(part[4:nl1]), part[nl1 + 8 : nl2].decode(), part[nl2 + 7 :], received))
        return out


def event_ts(data: bytes) -> float:
    """The server's `ts` of an event, read from its JSON without parsing the rest."""
    start = data.index(b'"ts":') + 5
    end = data.index(b",", start)
    return float(data[start:end])


def delta_chars(data: bytes) -> int:
    """How many characters a `message.delta` event's text holds, read without parsing its JSON;
    for text without escapes (the pacer's)."""
    start = data.index(b'"text":"') + 8
    return data.index(b'"', start) - start


def event_json(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(data)
    return value


class Api:
    """The calls the scenarios make, each one public HTTP request."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, max_connections: int = 2000) -> None:
        self.url = base_url
        self.headers = dict(headers or {})
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(300.0, connect=60.0, pool=300.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def me(self) -> dict[str, Any]:
        r = await self.http.get("/api/auth/me")
        _check(r, 200)
        return dict(r.json())

    async def conversation(self, title: str = "bench") -> str:
        r = await self.http.post("/api/conversations", json={"title": title})
        _check(r, 201)
        return str(r.json()["id"])

    async def start_run(self, cid: str, text: str, model: str | None = None) -> dict[str, Any]:
        r = await self.http.post(f"/api/conversations/{cid}/runs", json=_run_body(text, model))
        _check(r, 202)
        return dict(r.json())

    async def start_run_burst(self, cid: str, text: str, model: str | None = None) -> dict[str, Any]:
        """start_run for hundreds of runs started at once: a connection of its own through the lean
        client (httpx's pool scans every connection per request, which at that fan-out cost the
        client processes most of their CPU, CPU the server on the same machine then lacked)."""
        try:
            raw = await rawhttp.request(
                f"{self.url}/api/conversations/{cid}/runs", method="POST", body=json.dumps(_run_body(text, model)).encode(),
                headers={**self.headers, "Content-Type": "application/json"}, ok=202,
            )
        except rawhttp.HttpError as exc:
            raise ApiError(f"POST /api/conversations/{cid}/runs: {exc}") from exc
        return dict(json.loads(raw))

    async def cancel(self, rid: str) -> dict[str, Any]:
        r = await self.http.post(f"/api/runs/{rid}/cancel")
        _check(r, 202)
        return dict(r.json())

    async def run(self, rid: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/runs/{rid}")
        _check(r, 200)
        return dict(r.json())

    async def runs(self, active: bool | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if active is not None:
            params["active"] = "true" if active else "false"
        r = await self.http.get("/api/runs", params=params)
        _check(r, 200)
        return list(r.json()["runs"])

    async def conversations(self) -> list[dict[str, Any]]:
        r = await self.http.get("/api/conversations")
        _check(r, 200)
        return list(r.json()["conversations"])

    async def events(self, rid: str, after: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        """One page of the stored log (long-poll endpoint, no wait)."""
        r = await self.http.get(f"/api/runs/{rid}/events", params={"after": after, "limit": limit})
        _check(r, 200)
        return list(r.json()["events"])

    async def sse(
        self,
        rid: str,
        on_frames: Callable[[list[Frame]], bool],
        *,
        after: int = 0,
        last_event_id: int | None = None,
    ) -> None:
        """Read the run's SSE stream; `on_frames` gets the frames of each read and returns True to
        disconnect. Returns when it did, or when the stream ended (after the terminal event)."""
        await read_sse(self.url, rid, on_frames, after=after, last_event_id=last_event_id, headers=self.headers)


async def read_sse(
    base_url: str,
    rid: str,
    on_frames: Callable[[list[Frame]], bool],
    *,
    after: int = 0,
    last_event_id: int | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """`GET /api/runs/{rid}/stream` on a connection of its own, through the lean client (rawhttp)."""
    parser = SseParser()

    def on_body(data: bytes) -> bool:
        frames = parser.feed(data, time.time())
        return bool(frames) and on_frames(frames)

    sent = {**(headers or {}), "Accept": "text/event-stream"}
    if last_event_id is not None:
        sent["Last-Event-ID"] = str(last_event_id)
    url = f"{base_url}/api/runs/{rid}/stream" + (f"?after={after}" if after else "")
    await rawhttp.stream(url, on_body, headers=sent)


def _run_body(text: str, model: str | None) -> dict[str, Any]:
    return {"input": text} if model is None else {"input": text, "model": model}


class ApiError(RuntimeError):
    """The server answered with an unexpected status."""


def _check(r: httpx.Response, status: int) -> None:
    if r.status_code != status:
        raise ApiError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}")
