"""What handlers get from the application: its services, and the user making the request.

`current_user` is the only way a handler learns who is asking: a bearer token, else the session
cookie (which must bring its CSRF token to change anything). Handlers pass `user.id` to every query,
so another user's resources are not found rather than forbidden.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends
from starlette.requests import HTTPConnection

from onward.accounts.service import AccountService
from onward.accounts.tokens import same
from onward.activity import Activity
from onward.bus.base import EventBus
from onward.config import Settings
from onward.errors import CsrfFailed, NotFound, Unauthorized
from onward.limits import RunLimits
from onward.runs import RunService
from onward.store.accounts import AccountStore
from onward.store.base import Store
from onward.workspaces import Workspaces

if TYPE_CHECKING:
    from onward.tools.sandbox import CommandSandbox

log = logging.getLogger(__name__)

SESSION_COOKIE = "onward_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    bus: EventBus
    runs: RunService
    accounts: AccountService
    account_store: AccountStore
    limits: RunLimits
    workspaces: Workspaces
    sandbox: CommandSandbox
    activity: Activity


@dataclass(frozen=True, slots=True)
class CurrentUser:
    id: str
    name: str
    is_admin: bool
    via: Literal["session", "token"]
    csrf_token: str | None = None  # sessions only
    session_hash: str | None = None  # sessions only


async def services(conn: HTTPConnection) -> Services:
    # async: FastAPI would run a plain function in a worker thread, a thread hop per request
    svc: Services = conn.app.state.services
    return svc


def _unauthorized(message: str) -> Unauthorized:
    exc = Unauthorized(message)
    exc.headers["WWW-Authenticate"] = "Bearer"
    return exc


async def current_user(request: HTTPConnection, svc: Annotated[Services, Depends(services)]) -> CurrentUser:
    """The caller, from `Authorization: Bearer …` or the session cookie; 401 otherwise.

    Works for HTTP requests and WebSocket handshakes alike (a handshake changes nothing, so it
    needs no CSRF token; the WebSocket route checks its Origin instead)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        account = await svc.accounts.by_token(token.strip())
        if account is None:
            raise _unauthorized("this API token is invalid or revoked")
        return CurrentUser(account.id, account.name, account.is_admin, "token")
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise _unauthorized("log in first")
    record = await svc.accounts.by_session(session_id)
    if record is None:
        raise _unauthorized("your session has ended; log in again")
    if request.scope.get("method", "GET") not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not same(sent, record.csrf_token):
            raise CsrfFailed()
    account = record.account
    return CurrentUser(account.id, account.name, account.is_admin, "session", record.csrf_token, record.id_hash)


class CredentialCheck:
    """For a long-lived stream: is the credential it was opened with still good?

    A stream outlives the request that authorized it, so it asks again, at most every
    `stream_auth_recheck_s`: a token revoked, a session ended (logout, new password) or a user
    disabled — in this process or another, e.g. by `onward user` — ends the stream within that time.
    """

    def __init__(self, conn: HTTPConnection, svc: Services, user: CurrentUser) -> None:
        self._conn = conn
        self._svc = svc
        self._user = user
        self._interval = svc.settings.stream_auth_recheck_s
        self._due = time.monotonic() + self._interval

    @property
    def due(self) -> float:
        """When (monotonic) the next `still_valid()` asks the store again."""
        return self._due

    async def still_valid(self) -> bool:
        if time.monotonic() < self._due:
            return True
        self._due = time.monotonic() + self._interval
        try:
            again = await current_user(self._conn, self._svc)
        except Unauthorized:
            return False
        except Exception:  # e.g. the database is briefly unavailable: keep the stream, ask again later
            log.warning("could not re-check a stream's credential; trying again", exc_info=True,
                        extra={"user": self._user.id})
            return True
        return again.id == self._user.id


async def admin_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    """Administrators only; everyone else gets 404, as for any resource that is not theirs."""
    if not user.is_admin:
        raise NotFound("no such endpoint")
    return user


Svc = Annotated[Services, Depends(services)]
User = Annotated[CurrentUser, Depends(current_user)]
Admin = Annotated[CurrentUser, Depends(admin_user)]
