"""Login throttling per IP address and per username, with exponential backoff.

An attempt is counted as a failure *before* the password is checked (and forgiven on success), so
a burst of parallel guesses is throttled as surely as a sequence. The username key is counted
whether or not the user exists, so throttling tells nothing about which names are real. State is
in memory, per process: a restart forgets it, and scale-out processes each count their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from onward.config import Settings
from onward.errors import TooManyRequests

_MAX_KEYS = 100_000


@dataclass(slots=True)
class _Record:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class LoginThrottle:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.user_limit = settings.login_max_failures
        self.ip_limit = settings.login_ip_max_failures
        self.base = settings.login_backoff_base_s
        self.cap = settings.login_backoff_max_s
        self.window = settings.login_failure_window_s
        self.clock = clock
        self._records: dict[tuple[str, str], _Record] = {}

    def attempt(self, ip: str, username: str | None) -> None:
        """Raise TooManyRequests if either key must wait; else count the attempt as a failure."""
        now = self.clock()
        keys = self._keys(ip, username)
        wait = max(self._record(key, now).blocked_until - now for key in keys)
        if wait > 0:
            raise TooManyRequests(
                "too many failed logins; wait before trying again", retry_after=wait
            )
        for key in keys:
            self._fail(key, now)

    def succeeded(self, ip: str, username: str | None) -> None:
        """Forgive the attempt: the username starts afresh, the IP loses the counted failure."""
        for key in self._keys(ip, username):
            record = self._records.get(key)
            if record is None:
                continue
            if key[0] == "user":
                del self._records[key]
            else:
                record.failures = max(0, record.failures - 1)
                if record.failures < self.ip_limit:
                    record.blocked_until = 0.0

    def _keys(self, ip: str, username: str | None) -> list[tuple[str, str]]:
        keys = [("ip", ip)]
        if username is not None:
            keys.append(("user", username.strip().lower()))
        return keys

    def _record(self, key: tuple[str, str], now: float) -> _Record:
        record = self._records.get(key)
        if record is None or (now - record.last > self.window and now >= record.blocked_until):
            record = self._records[key] = _Record()
        return record

    def _fail(self, key: tuple[str, str], now: float) -> None:
        record = self._record(key, now)
        record.failures += 1
        record.last = now
        limit = self.ip_limit if key[0] == "ip" else self.user_limit
        if record.failures >= limit:
            record.blocked_until = now + min(self.cap, self.base * 2 ** (record.failures - limit))
        if len(self._records) > _MAX_KEYS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        stale = [k for k, r in self._records.items() if now - r.last > self.window and now >= r.blocked_until]
        for key in stale:
            del self._records[key]

