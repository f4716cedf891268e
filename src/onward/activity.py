"""Each user's runs as they change status, pushed to that user's open feeds (`GET /api/activity`):
how the web UI on every device learns at once of a run started or ended elsewhere, without polling.

A notice is a hint, not a log: it carries the run as it now stands (read after the change was
committed) and no sequence number. A feed that falls behind is ended, and a client re-reads the
runs whenever it (re)connects. In-process, like the event bus of embedded mode; nothing is read or
sent for a user who has no feed open.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from onward.bus.base import Lagged
from onward.bus.memory import Wakeup
from onward.core.runs import Run
from onward.store.base import Store

log = logging.getLogger(__name__)

ENDED_REMEMBERED = 1000  # per feed: the runs whose end it has seen (an older notice must not revive them)


class FeedClosed(Exception):
    """The server is shutting down: the feed ends (a client reconnects to the next server)."""


class Feed:
    """One open feed: the notices not yet taken, at most `limit` of them."""

    def __init__(self, activity: Activity, user_id: str, limit: int) -> None:
        self._activity = activity
        self.user_id = user_id
        self._limit = limit
        self._notices: deque[dict[str, Any]] = deque()
        self._ended: dict[str, None] = {}  # the last ENDED_REMEMBERED runs this feed saw end, oldest first
        self._wakeup = Wakeup()
        self.lagged = False
        self.closed = False  # by the server (shutdown)

    def _push(self, run: Run) -> None:
        if self.lagged or self.closed or run.id in self._ended:
            return
        if run.status.is_terminal:
            self._ended[run.id] = None
            if len(self._ended) > ENDED_REMEMBERED:
                del self._ended[next(iter(self._ended))]
        if len(self._notices) >= self._limit:
            self.lagged = True
            self._notices.clear()
            self.close()
        else:
            self._notices.append(run.to_json())
        self._wakeup.set()

    async def get(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The notices since the last call, waiting for one; [] after `timeout` s.
        Raises Lagged (the client fell behind) or FeedClosed (the server is shutting down)."""
        if not self._notices and not self.lagged and not self.closed:
            await self._wakeup.wait(timeout)
        if self.lagged:
            raise Lagged(self.user_id)
        if self.closed:
            raise FeedClosed()
        out = list(self._notices)
        self._notices.clear()
        return out

    def close(self) -> None:
        self._activity._drop(self)


class Activity:
    def __init__(self, store: Store, feed_limit: int = 1000) -> None:
        self.store = store
        self.feed_limit = feed_limit
        self._feeds: dict[str, set[Feed]] = {}
        self.closed = False

    def watch(self, user_id: str) -> Feed:
        feed = Feed(self, user_id, self.feed_limit)
        if self.closed:
            feed.closed = True
        else:
            self._feeds.setdefault(user_id, set()).add(feed)
        return feed

    def close(self) -> None:
        """End every open feed now (server shutdown): an open feed never ends by itself, and
        uvicorn would wait its whole graceful-shutdown timeout for it."""
        self.closed = True
        for feeds in list(self._feeds.values()):
            for feed in list(feeds):
                feed.closed = True
                feed._wakeup.set()
                self._drop(feed)

    async def changed(self, run_id: str, user_id: str) -> None:
        """A change of the run's status was committed: tell the user's open feeds, if any."""
        if user_id not in self._feeds:
            return
        try:
            run = await self.store.get_run(run_id)
        except Exception:  # a notice is a hint: the run itself is not affected
            log.warning("could not read run %s for the activity feed", run_id, exc_info=True,
                        extra={"run_id": run_id})
            return
        for feed in list(self._feeds.get(user_id, ())):
            feed._push(run)

    def _drop(self, feed: Feed) -> None:
        feeds = self._feeds.get(feed.user_id)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self._feeds[feed.user_id]
