"""The activity feed: the caller's runs as they change status, by Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from onward.activity import FeedClosed
from onward.api.deps import CredentialCheck, Svc, User
from onward.bus.base import Lagged

router = APIRouter(prefix="/api", tags=["runs"])


@router.get("/activity")
async def activity(request: Request, svc: Svc, user: User) -> StreamingResponse:
    """Server-Sent Events: `event: run` with the run (as `GET /api/runs/{id}` shows it) each time one
    of the caller's runs is created, starts, is being cancelled or ends — from any device, the CLI
    or the API. Notices are hints, not a log: they have no ids and no resume, so after (re)connecting
    read `GET /api/runs?active=true` once. The stream ends when the client falls behind (`: lagged`)
    or its token or session stops being valid; reconnect."""
    credential = CredentialCheck(request, svc, user)

    async def frames() -> AsyncIterator[str]:
        feed = svc.activity.watch(user.id)  # before the first byte: nothing after `: connected` is missed
        try:
            yield ": connected\n\n"
            while True:
                try:
                    runs = await feed.get(timeout=svc.settings.sse_heartbeat_s)
                except Lagged:
                    yield ": lagged; reconnect and read the runs again\n\n"
                    return
                except FeedClosed:
                    yield ": server shutting down\n\n"
                    return
                if not await credential.still_valid():
                    yield ": credentials revoked\n\n"
                    return
                if runs:
                    yield "".join(f"event: run\ndata: {orjson.dumps(run).decode()}\n\n" for run in runs)
                else:
                    yield ": heartbeat\n\n"
        finally:
            feed.close()

    return StreamingResponse(
        frames(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
