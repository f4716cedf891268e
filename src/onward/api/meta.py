"""Health (public), and the server's models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from onward import __version__
from onward.api.deps import Svc, User

router = APIRouter(prefix="/api", tags=["meta"])


@router.get("/health")
async def health(svc: Svc) -> dict[str, Any]:
    return {"ok": True, "version": __version__, "accepting_runs": svc.runs.runner.accepting}


@router.get("/models")
async def models(svc: Svc, user: User) -> dict[str, Any]:
    names = svc.settings.model_names()
    default = None
    try:
        default = svc.settings.resolve_model(None)[0]
    except Exception:
        default = None
    return {"models": [{"name": n} for n in names], "default": default}

