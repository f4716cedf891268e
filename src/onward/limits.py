"""Per-user run limits: how many runs one user may have active, and start per time window.

Checked when a run is asked for, before anything is stored; past a limit the answer is 429 with
Retry-After. The check reads the runs table, so it holds across restarts and processes; two
requests racing past the last free slot may both get it (a soft limit, by one or two).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from onward.config import Settings
from onward.errors import TooManyRequests
from onward.store.accounts import AccountStore

log = logging.getLogger(__name__)

# A run's end cannot be predicted: this is how long a client is told to wait for a free slot.
ACTIVE_RETRY_AFTER_S = 5.0


class Caller(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def is_admin(self) -> bool: ...


class RunLimits:
    def __init__(self, settings: Settings, store: AccountStore) -> None:
        self.settings = settings
        self.store = store

    async def check(self, user: Caller, replacing_in: str | None = None) -> None:
        """Raise TooManyRequests if `user` may not start a run now. `replacing_in`: the conversation
        whose active run the new one replaces (if_busy=interrupt), which does not count."""
        s = self.settings
        if user.is_admin and s.limits_exempt_admins:
            return
        active = await self.store.count_active_runs(user.id, except_conversation=replacing_in)
        if active >= s.user_max_active_runs:
            log.info("run refused: active-run limit", extra={"user": user.id, "active": active})
            raise TooManyRequests(
                f"you have {active} active runs; the limit is user_max_active_runs="
                f"{s.user_max_active_runs}: wait for one to end, or stop one",
                retry_after=ACTIVE_RETRY_AFTER_S,
            )
        now = time.time()
        count, oldest = await self.store.runs_since(user.id, now - s.user_runs_window_s)
        if count >= s.user_max_runs_per_window and oldest is not None:
            log.info("run refused: runs-per-window limit", extra={"user": user.id, "count": count})
            raise TooManyRequests(
                f"you started {count} runs in the last {s.user_runs_window_s:g} s; the limit is "
                f"user_max_runs_per_window={s.user_max_runs_per_window}",
                retry_after=oldest + s.user_runs_window_s - now,
            )
