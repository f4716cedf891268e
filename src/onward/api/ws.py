"""Run events over a WebSocket: the same exactly-once `follow` as SSE, one event per text message.

`GET /api/runs/{rid}/ws?after=N` (upgrade). The server sends each event's JSON and closes with
1000 after the terminal event. Authentication is the same as HTTP (bearer header or session
cookie); because browsers send cookies on cross-site WebSocket handshakes, a cookie-authenticated
handshake must come from the server's own origin. Failures close the socket with 4401
(unauthorized), 4403 (foreign origin), 4404 (no such run) or 4400 (bad `after`) and a reason;
4401 also ends an open socket whose token or session stopped being valid.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from onward.api.deps import CredentialCheck, current_user, services
from onward.api.runs import check_after
from onward.delivery import follow
from onward.errors import Forbidden, OnwardError

router = APIRouter(prefix="/api", tags=["runs"])

_CLOSE_CODES = {400: 4400, 401: 4401, 403: 4403, 404: 4404}


@router.websocket("/runs/{rid}/ws")
async def run_ws(websocket: WebSocket, rid: str, after: int = 0) -> None:
    svc = await services(websocket)
    await websocket.accept()  # accept first: close codes and reasons only exist after it
    try:
        user = await current_user(websocket, svc)
        if user.via == "session" and not _same_origin(websocket):
            raise Forbidden("cross-origin WebSocket with a session cookie; connect from this server's pages")
        check_after(await svc.store.get_run(rid, user.id), after)
    except OnwardError as exc:
        await websocket.close(code=_CLOSE_CODES.get(exc.status_code, 1008), reason=exc.message[:120])
        return

    credential = CredentialCheck(websocket, svc, user)

    async def send_events() -> None:
        events = follow(svc.store, svc.bus, rid, max(after, 0), heartbeat=svc.settings.sse_heartbeat_s)
        async with contextlib.aclosing(events):  # leaving early unsubscribes at once
            async for batch in events:
                if not await credential.still_valid():
                    await websocket.close(code=4401, reason="credentials revoked")
                    return
                for event in batch:
                    await websocket.send_text(event.json)
        await websocket.close(code=1000)

    async def until_client_leaves() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say; reading is how a close is noticed at once

    sender = asyncio.create_task(send_events())
    listener = asyncio.create_task(until_client_leaves())
    try:
        await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, listener):
            task.cancel()
        for task in (sender, listener):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser
    return urlsplit(origin).netloc == websocket.headers.get("host", "")

