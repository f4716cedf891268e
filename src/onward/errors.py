"""One exception base. Each subclass's docstring is its default message and it knows its HTTP status.

The API turns these into `{"error": {"code", "message"}}` responses; the CLI prints the message.
"""

from __future__ import annotations

from typing import Any


class OnwardError(Exception):
    """Something went wrong."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.extra = extra
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
