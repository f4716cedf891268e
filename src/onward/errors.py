"""One exception base. Each subclass's docstring is its default message and it knows its HTTP status.

The API turns these into `{"error": {"code", "message"}}` responses; the CLI prints the message.
"""

from __future__ import annotations

import math
from typing import Any


class OnwardError(Exception):
    """Something went wrong."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.extra = extra
        self.headers: dict[str, str] = {}  # sent with the HTTP response (Retry-After, …)
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class BadRequest(OnwardError):
    """The request is malformed."""

    status_code = 400
    code = "bad_request"


class Unauthorized(OnwardError):
    """Log in first."""

    status_code = 401
    code = "unauthorized"


class InvalidCredentials(Unauthorized):
    """wrong username or password"""

    code = "invalid_credentials"


class AccountDisabled(Unauthorized):
    """This account is disabled; ask an administrator."""

    code = "account_disabled"


class Forbidden(OnwardError):
    """Not allowed."""

    status_code = 403
    code = "forbidden"


class CsrfFailed(Forbidden):
    """Missing or wrong X-CSRF-Token header (required with cookie sessions; GET /api/auth/me gives it)."""

    code = "csrf_failed"


class NotFound(OnwardError):
    """No such resource."""

    status_code = 404
    code = "not_found"


class Conflict(OnwardError):
    """The resource is in a state that does not allow this."""

    status_code = 409
    code = "conflict"


class ConversationBusy(Conflict):
    """This conversation already has an active run; stop it, or send with if_busy=interrupt."""

    code = "conversation_busy"


class PayloadTooLarge(OnwardError):
    """The request body is too large."""

    status_code = 413
    code = "payload_too_large"


class TooManyRequests(OnwardError):
    """Too many requests; retry later."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None, **extra: Any) -> None:
        given = extra.pop("retry_after_s", 1)  # as sent by a server, when a client rebuilds the error
        seconds = max(1, math.ceil(retry_after if retry_after is not None else float(given)))
        super().__init__(message, retry_after_s=seconds, **extra)
        self.retry_after = seconds
        self.headers["Retry-After"] = str(seconds)


class Unavailable(OnwardError):
    """The server is shutting down and accepts no new runs; retry in a moment."""

    status_code = 503
    code = "unavailable"


class ConfigError(OnwardError):
    """The configuration is invalid."""

    code = "config_error"


class LLMError(OnwardError):
    """The LLM endpoint failed."""

    status_code = 502
    code = "llm_error"
