"""Passwords are hashed with argon2id (argon2-cffi's RFC 9106 low-memory profile), off the event loop.

Hashing costs tens of milliseconds and 64 MiB on purpose, so it runs in worker threads, at most a
few at once. A login for a user that does not exist verifies against a dummy hash, so it takes as
long as a wrong password and says the same.
"""

from __future__ import annotations

import asyncio
import threading
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from onward.errors import BadRequest

MIN_LENGTH = 8
MAX_LENGTH = 1024

_hasher = PasswordHasher()  # argon2id
_slots = threading.BoundedSemaphore(4)  # concurrent hashes (each takes 64 MiB for a moment)


def check_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise BadRequest(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise BadRequest(f"the password must have at most {MAX_LENGTH} characters")


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("onward: no such user, same cost")


def hash_password(password: str) -> str:
    with _slots:
        return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches; a missing hash costs the same and is False."""
    with _slots:
        try:
            return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


async def warm_up() -> None:
    """Compute the dummy hash now, so that the first login of an unknown user is not faster or slower."""
    await asyncio.to_thread(_dummy_hash)


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)
