"""Accounts as values: built from rows, never carrying a secret (no hash leaves the store)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    is_admin: bool
    disabled: bool
    has_password: bool
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_admin": self.is_admin,
            "disabled": self.disabled,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A live session: whose it is, its CSRF token, and when it was last seen."""

    id_hash: str
    account: Account
    csrf_token: str
    last_seen_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as listed: never the token itself, which is shown once at creation."""

    id: str
    name: str
    created_at: float
    last_used_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": iso(self.created_at),
            "last_used_at": iso(self.last_used_at),
        }
