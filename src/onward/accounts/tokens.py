"""Random tokens and their digests: session ids, API tokens, CSRF tokens, one-time login links.

Each secret has 256 bits of entropy, so a plain sha256 is enough to store it: nothing can be
guessed from the digest and there is no password-like search space to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "onw_"


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))
