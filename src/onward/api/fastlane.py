"""The two requests every run makes — start it, stream it — served without FastAPI's per-request work.

Design decision: FastAPI solves a request's dependencies and validates its parameters anew for
every request; taking that out of these two endpoints cut the server's CPU per run by a quarter
to a third in a burst of run starts (see docs/performance.md). A lane route sits ahead of
FastAPI's routes and serves the well-formed request — a JSON object of the right shape, a plain
`after` — with the same functions FastAPI would call: `current_user`, then the endpoint function
itself. Anything else goes to FastAPI's own route unchanged, so every error answer (401, 404, 409,
422, …) comes from one place, and in the same order FastAPI would find it. FastAPI's routes stay
declared: they are the OpenAPI schema and the reference tests/unit/test_fastlane.py compares the
lane with.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import orjson
from fastapi.routing import APIRouter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from onward.api import runs
from onward.api.deps import Services, current_user

Reference = Callable[[Scope, Receive, Send], Awaitable[None]]

_AFTER = re.compile(rb"after=([0-9]{1,15})")
_JSON_TYPE = re.compile(r"application/(json|[^;\s]*\+json)\s*(;.*)?", re.IGNORECASE)


def routes(router: APIRouter) -> list[BaseRoute]:
    """Lane routes for `router`'s start and stream endpoints, to be placed ahead of FastAPI's."""
    by_name = {r.name: r for r in router.routes if isinstance(r, Route)}
    start, stream = by_name["start_run"], by_name["stream_run"]
    return [
        Route(start.path, _StartRun(start.handle), methods=["POST"], name="start_run_lane", include_in_schema=False),
        Route(stream.path, _StreamRun(stream.handle), methods=["GET"], name="stream_run_lane", include_in_schema=False),
    ]


class _StartRun:
    """`POST /api/conversations/{cid}/runs` with a body that is a valid NewRun."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = await _read_request(receive)
        new = _new_run(scope, received)
        if new is None:
            await self.reference(scope, _replay(received, receive), send)
            return
        svc: Services = scope["app"].state.services
        request = Request(scope, receive)
        user = await current_user(request, svc)
        out = await runs.start_run(scope["path_params"]["cid"], new, svc, user)
        content = orjson.dumps(out)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class _StreamRun:
    """`GET /api/runs/{rid}/stream` with no query or just `after=N`, and at most one Last-Event-ID."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        after = _after(scope)
        last_ids = [v for k, v in scope["headers"] if k == b"last-event-id"]
        if after is None or scope["method"] != "GET" or len(last_ids) > 1:
            await self.reference(scope, receive, send)
            return
        svc: Services = scope["app"].state.services
        request = Request(scope, receive)
        user = await current_user(request, svc)
        last_event_id = last_ids[0].decode("latin-1") if last_ids else None
        response = await runs.stream_run(request, scope["path_params"]["rid"], svc, user, after, last_event_id)
        await response(scope, receive, send)


def _new_run(scope: Scope, received: list[Message]) -> runs.NewRun | None:
    """The body as a NewRun, when it arrived whole and FastAPI would read it as JSON and accept
    it; else None."""
    if not received or received[-1]["type"] != "http.request" or received[-1].get("more_body", False):
        return None  # the client went away mid-body
    body = b"".join(m.get("body", b"") for m in received)
    if not body or not _json_content(scope):
        return None
    try:
        return runs.NewRun.model_validate_json(body)
    except ValidationError:
        return None


def _json_content(scope: Scope) -> bool:
    """One Content-Type, application/json or application/*+json: the bodies FastAPI reads as JSON.
    (Without a Content-Type, FastAPI 0.165 validates the raw bytes and answers 422.)"""
    types = [v for k, v in scope["headers"] if k == b"content-type"]
    return len(types) == 1 and _JSON_TYPE.fullmatch(types[0].decode("latin-1").strip()) is not None


def _after(scope: Scope) -> int | None:
    """`after` from a query string that is empty or exactly `after=<digits>`; else None."""
    query: bytes = scope.get("query_string", b"")
    if not query:
        return 0
    match = _AFTER.fullmatch(query)
    return int(match.group(1)) if match else None


async def _read_request(receive: Receive) -> list[Message]:
    """The messages that carry the body, up to its end or the client's going away."""
    received = []
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return received


def _replay(received: list[Message], receive: Receive) -> Receive:
    """`receive` as it was before the body was read: those messages again, then the connection's."""
    pending = list(reversed(received))

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
