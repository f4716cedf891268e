"""Conversations: list, create, read (with messages and the active run), rename, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from onward.api.deps import Svc, User

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


class NewConversation(BaseModel):
    title: str | None = Field(None, max_length=500)


class ConversationPatch(BaseModel):
    title: str = Field(..., min_length=1, max_length=500)


@router.get("")
async def list_conversations(svc: Svc, user: User) -> dict[str, Any]:
    """The caller's conversations, most recently active first."""
    return {"conversations": await svc.store.list_conversations(user.id)}


@router.post("", status_code=201)
async def create_conversation(svc: Svc, user: User, body: NewConversation | None = None) -> dict[str, Any]:
    title = (body.title if body else None) or "New conversation"
    return await svc.store.create_conversation(user.id, title)


@router.get("/{cid}")
async def get_conversation(cid: str, svc: Svc, user: User) -> dict[str, Any]:
    conv = await svc.store.get_conversation(user.id, cid)
    messages = await svc.store.messages(cid)
    active = await svc.store.active_run(cid)
    return {
        **conv,
        "messages": [m.to_json() for m in messages],
        "active_run": active.to_json() if active else None,
    }


@router.patch("/{cid}")
async def update_conversation(cid: str, body: ConversationPatch, svc: Svc, user: User) -> dict[str, Any]:
    return await svc.store.update_conversation(user.id, cid, body.title)


@router.delete("/{cid}", status_code=204)
async def delete_conversation(cid: str, svc: Svc, user: User) -> None:
    await svc.store.delete_conversation(user.id, cid)
