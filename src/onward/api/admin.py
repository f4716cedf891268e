"""Administration: users, and every user's runs. For anyone but an admin these paths do not exist
(404). Cancelling another user's run is logged with both names."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from onward.api.deps import Admin, Svc
from onward.api.runs import cancel_response

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/admin", tags=["admin"])


class NewUser(BaseModel):
    name: str = Field(..., min_length=1, max_length=64)
    password: str = Field(..., min_length=1, max_length=1024)
    is_admin: bool = False


class UserPatch(BaseModel):
    disabled: bool | None = None
    is_admin: bool | None = None
    password: str | None = Field(None, max_length=1024)


@router.get("/users")
async def list_users(svc: Svc, admin: Admin) -> dict[str, Any]:
    return {"users": [u.to_json() for u in await svc.account_store.list_users()]}


@router.post("/users", status_code=201)
async def create_user(body: NewUser, svc: Svc, admin: Admin) -> dict[str, Any]:
    account = await svc.accounts.add_user(body.name, body.password, body.is_admin)
    log.info("admin %s added user %s", admin.name, account.name, extra={"admin": admin.name, "user": account.name})
    return account.to_json()


@router.patch("/users/{user_id}")
async def update_user(user_id: str, body: UserPatch, svc: Svc, admin: Admin) -> dict[str, Any]:
    account = await svc.account_store.get_user(user_id)
    if body.password is not None:
        account = await svc.accounts.set_password(user_id, body.password)
    if body.is_admin is not None:
        account = await svc.accounts.set_admin(user_id, body.is_admin)
    if body.disabled is not None:
        account = await svc.accounts.set_disabled(user_id, body.disabled)
    log.info("admin %s changed user %s", admin.name, account.name, extra={"admin": admin.name, "user": account.name})
    return account.to_json()


@router.get("/runs")
async def list_runs(
    svc: Svc, admin: Admin, active: bool | None = None, limit: int = Query(200, ge=1, le=1000)
) -> dict[str, Any]:
    """Every user's runs, newest first; each with `user_name`."""
    found = await svc.account_store.all_runs(active=active, limit=limit)
    return {"runs": [{**run.to_json(), "user_name": owner} for run, owner in found]}


@router.post("/runs/{rid}/cancel", status_code=202)
async def cancel_run(rid: str, svc: Svc, admin: Admin) -> dict[str, Any]:
    """Stop any user's run (idempotent, like POST /api/runs/{rid}/cancel)."""
    run = await svc.store.get_run(rid)
    owner = await svc.account_store.get_user(run.user_id)
    log.warning(
        "admin %s cancels run %s of user %s", admin.name, rid, owner.name,
        extra={"admin": admin.name, "user": owner.name, "run_id": rid},
    )
    return await cancel_response(svc, run)
