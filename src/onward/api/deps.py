"""What handlers get from the application: its services, and the user making the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from onward.bus.base import EventBus
from onward.config import Settings
from onward.runs import RunService
from onward.store.base import Store


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    bus: EventBus
    runs: RunService
    local_user_id: str


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def current_user(svc: Annotated[Services, Depends(services)]) -> str:
    """The caller's user id. Until accounts land there is one local user."""
    return svc.local_user_id


Svc = Annotated[Services, Depends(services)]
User = Annotated[str, Depends(current_user)]
