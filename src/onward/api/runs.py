"""Runs: start, read, list, cancel, and their events by long-poll and by Server-Sent Events."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field

from onward.api.deps import CredentialCheck, Services, Svc, User
from onward.api.sse import EventStream
from onward.core.runs import Run
from onward.delivery import Follower, wait_events
from onward.errors import BadRequest

router = APIRouter(prefix="/api", tags=["runs"])


class NewRun(BaseModel):
    input: str = Field(..., description="The user's message.")
    model: str | None = Field(None, description="A model name from GET /api/models; default if absent.")
    if_busy: Literal["reject", "interrupt"] = Field(
        "reject", description="When the conversation has an active run: 409, or cancel it and start this one."
    )


@router.post("/conversations/{cid}/runs", status_code=202)
async def start_run(cid: str, body: NewRun, svc: Svc, user: User) -> dict[str, Any]:
    """Store the message and start a run. The run goes on whatever happens to this connection."""
    await svc.limits.check(user, replacing_in=cid if body.if_busy == "interrupt" else None)
    if svc.sandbox.bwrap is None:  # users added meanwhile by `onward user add` turn commands off
        await svc.accounts.refresh_user_count()
    run = await svc.runs.start(user.id, cid, body.input, body.model, body.if_busy)
    return run.to_json()


@router.get("/runs")
async def list_runs(
    svc: Svc,
    user: User,
    active: bool | None = None,
    limit: int = Query(100, ge=1, le=1000),
    conversation_id: str | None = Query(None, description="Only the runs of this conversation."),
) -> dict[str, Any]:
    """The caller's runs, newest first; `active=true` for those still going."""
    runs = await svc.store.list_runs(user.id, active=active, limit=limit, conversation_id=conversation_id)
    return {"runs": [r.to_json() for r in runs]}


@router.get("/runs/{rid}")
async def get_run(rid: str, svc: Svc, user: User) -> dict[str, Any]:
    return (await svc.store.get_run(rid, user.id)).to_json()


@router.post("/runs/{rid}/cancel", status_code=202)
async def cancel_run(rid: str, svc: Svc, user: User) -> dict[str, Any]:
    """Stop a run. Idempotent: cancelling a finished run changes nothing and says so."""
    return await cancel_response(svc, await svc.store.get_run(rid, user.id))


def check_after(run: Run, after: int) -> None:
    """A reader cannot have seen an event the run has not committed: such an `after` is a bug
    in the client, and following from it would wait past the run's real end."""
    if after > run.last_seq:
        raise BadRequest(f"after={after} is beyond this run's last event (seq {run.last_seq})")


async def cancel_response(svc: Services, run: Run) -> dict[str, Any]:
    """Cancel `run` and describe the outcome: the run, `changed`, and a message when it had ended."""
    run, changed = await svc.runs.cancel(run)
    out = run.to_json()
    out["changed"] = changed
    if run.status.is_terminal and not changed:
        out["message"] = f"run already {run.status.value}"
    return out


@router.get("/runs/{rid}/events")
async def run_events(
    rid: str,
    svc: Svc,
    user: User,
    after: int = Query(0, ge=0),
    limit: int = Query(1000, ge=1, le=10_000),
    wait: float = Query(0, ge=0),
) -> Response:
    """Long-poll: events with seq > after; with `wait`, hold the request until one arrives."""
    check_after(await svc.store.get_run(rid, user.id), after)
    wait = min(wait, svc.settings.longpoll_max_wait_s)
    events = await wait_events(svc.store, svc.bus, rid, after, limit, wait)
    run = await svc.store.get_run(rid, user.id)
    last = events[-1].seq if events else after
    body = (
        '{"events":[' + ",".join(e.json for e in events) + f'],"last_seq":{last},'
        f'"run_last_seq":{run.last_seq},"status":"{run.status.value}"}}'
    )
    return Response(body, media_type="application/json")


@router.get(
    "/runs/{rid}/stream",
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream_run(
    request: Request,
    rid: str,
    svc: Svc,
    user: User,
    after: int = Query(0, ge=0),
    last_event_id: str | None = Header(None),
) -> EventStream:
    """Server-Sent Events from seq > after (or > Last-Event-ID); ends after the terminal event, or
    when the caller's token or session stops being valid (checked every `stream_auth_recheck_s`)."""
    run = await svc.store.get_run(rid, user.id)
    start = after
    if last_event_id and last_event_id.strip().isdigit():
        start = max(start, int(last_event_id.strip()))
    check_after(run, start)
    return EventStream(
        Follower(svc.store, svc.bus, rid, start, seen_active=run.status.is_active),
        CredentialCheck(request, svc, user),
        heartbeat=svc.settings.sse_heartbeat_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
