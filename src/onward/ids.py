"""Identifiers: a short prefix naming the kind, then a time-ordered random token."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """`prefix_` + 10 chars of millisecond time + 12 random chars; sorts by creation time."""
    ms = time.time_ns() // 1_000_000
    stamp = ""
    for _ in range(10):
        stamp = _ALPHABET[ms & 31] + stamp
        ms >>= 5
    # one system call for the randomness, not one per character (secrets.choice reads the OS
    # source each time: a dozen getrandom calls per id added up at hundreds of run starts)
    return f"{prefix}_{stamp}{''.join(_ALPHABET[b & 31] for b in secrets.token_bytes(12))}"
