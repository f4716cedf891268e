"""Logging in and out, and who the caller is.

A login answers with the session cookie (HttpOnly, SameSite=Lax, Secure by setting) and the CSRF
token the page must send back in X-CSRF-Token on every state-changing request. Wrong credentials
get one answer whether or not the user exists.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from onward.api.deps import SESSION_COOKIE, Svc, User
from onward.errors import BadRequest

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Login(BaseModel):
    username: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=1024)
    login_token: str | None = Field(None, max_length=200, description="The token of a one-time login link.")


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/login")
async def login(body: Login, request: Request, response: Response, svc: Svc) -> dict[str, Any]:
    """`{username, password}` or `{login_token}` → the user and a CSRF token; sets the session cookie."""
    ip = client_ip(request)
    if body.login_token:
        account, session_id, csrf = await svc.accounts.login_with_link(body.login_token, ip)
    elif body.username is not None and body.password is not None:
        account, session_id, csrf = await svc.accounts.login(body.username, body.password, ip)
    else:
        raise BadRequest("send {username, password} or {login_token}")
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(svc.settings.session_ttl_h * 3600),
        path="/",
        httponly=True,
        samesite="lax",
        secure=svc.settings.cookie_secure,
    )
    return {"user": {"id": account.id, "name": account.name, "is_admin": account.is_admin}, "csrf_token": csrf}


@router.post("/logout", status_code=204)
async def logout(svc: Svc, user: User, response: Response) -> None:
    """End this session on the server (a bearer token stays valid: revoke it with DELETE /api/tokens/{id})."""
    if user.session_hash is not None:
        await svc.accounts.logout(user.session_hash)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=svc.settings.cookie_secure)


@router.get("/me")
async def me(svc: Svc, user: User) -> dict[str, Any]:
    """The caller; `sandbox` says how commands are confined and `sandbox_warning` what to show if not."""
    return {
        "id": user.id,
        "name": user.name,
        "is_admin": user.is_admin,
        "via": user.via,
        "csrf_token": user.csrf_token,
        "sandbox": svc.sandbox.name,
        "sandbox_warning": svc.sandbox.warning,
    }
