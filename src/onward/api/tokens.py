"""API tokens: bearer tokens for scripts and the CLI. Shown once at creation, stored as a digest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from onward.api.deps import Svc, User

router = APIRouter(prefix="/api/tokens", tags=["auth"])


class NewToken(BaseModel):
    name: str = Field("token", min_length=1, max_length=200, description="What the token is for.")


@router.post("", status_code=201)
async def create_token(svc: Svc, user: User, body: NewToken | None = None) -> dict[str, Any]:
    """A new token for the caller: `token` is in this answer only."""
    record, token = await svc.accounts.create_token(user.id, (body.name if body else "token"))
    return {**record.to_json(), "token": token}


@router.get("")
async def list_tokens(svc: Svc, user: User) -> dict[str, Any]:
    return {"tokens": [t.to_json() for t in await svc.account_store.list_tokens(user.id)]}


@router.delete("/{token_id}", status_code=204)
async def revoke_token(token_id: str, svc: Svc, user: User) -> None:
    await svc.accounts.revoke_token(user.id, token_id)
