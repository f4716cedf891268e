"""The activity feed over a real server: every change of the caller's runs, in order, from any
client; nothing of other users'; the feed ends with its credential."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.conftest import SERVER_SETTINGS
from tests.server.helpers import Api

TERMINAL_STATUSES = {"completed", "cancelled", "failed", "interrupted"}


class Feed:
    """`GET /api/activity`, read line by line: `frames()` yields ("comment", text) and ("run", run)."""

    def __init__(self, server: OnwardServer, headers: dict[str, str]) -> None:
        self._stack = contextlib.ExitStack()
        self.response = self._stack.enter_context(
            httpx.stream("GET", f"{server.url}/api/activity", headers=headers, timeout=30)
        )
        self._lines = self.response.iter_lines()

    def frames(self) -> Iterator[tuple[str, Any]]:
        event: str | None = None
        data: list[str] = []
        for line in self._lines:
            if line.startswith(":"):
                yield "comment", line[1:].strip()
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line == "" and data:
                assert event == "run", event
                yield "run", json.loads("\n".join(data))
                event, data = None, []

    def statuses_of(self, rid: str) -> list[str]:
        """The statuses notified for `rid` up to its terminal one (other runs' notices are skipped)."""
        seen: list[str] = []
        for kind, value in self.frames():
            if kind == "run" and value["id"] == rid:
                seen.append(value["status"])
                if value["status"] in TERMINAL_STATUSES:
                    return seen
        raise AssertionError(f"the feed ended before run {rid} did: {seen}")

    def close(self) -> None:
        self._stack.close()


@contextlib.contextmanager
def feed(server: OnwardServer, headers: dict[str, str]) -> Iterator[Feed]:
    f = Feed(server, headers)
    try:
        assert f.response.status_code == 200, f.response.read()
        assert f.response.headers["content-type"].startswith("text/event-stream")
        assert next(f.frames()) == ("comment", "connected")  # watching from here on
        yield f
    finally:
        f.close()


def test_the_feed_shows_every_change_of_the_callers_runs(server: OnwardServer, api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"text": "done", "chunk_chars": 2, "delay_ms": 5}], match="FEED-ONE")
    with feed(server, api.headers) as f:
        cid = api.conversation()
        rid = api.start(cid, "FEED-ONE")["id"]  # another connection: as from another device
        assert f.statuses_of(rid) == ["queued", "running", "completed"]
    run = api.run(rid)
    assert run["status"] == "completed" and run["conversation_id"] == cid


def test_stop_is_notified_as_cancelling_then_cancelled(server: OnwardServer, api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"text": "s" * 400, "chunk_chars": 1, "delay_ms": 20}], match="FEED-STOP")
    with feed(server, api.headers) as f:
        rid = api.start(api.conversation(), "FEED-STOP")["id"]
        frames = f.frames()
        for kind, value in frames:
            if kind == "run" and value["id"] == rid and value["status"] == "running":
                break
        api.cancel(rid)
        assert f.statuses_of(rid) == ["cancelling", "cancelled"]


def test_another_users_runs_are_not_in_the_feed(server: OnwardServer, api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"text": "ok"}], match="FEED-PRIVATE")
    server.create_user("feedmate", "feedmate-password-1")
    with httpx.Client(base_url=server.url, timeout=30) as other:
        r = other.post("/api/auth/login", json={"username": "feedmate", "password": "feedmate-password-1"})
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        with feed(server, api.headers) as f:
            cid = other.post("/api/conversations", json={}, headers=csrf).json()["id"]
            theirs = other.post(f"/api/conversations/{cid}/runs", json={"input": "FEED-PRIVATE"}, headers=csrf)
            assert theirs.status_code == 202
            deadline = time.monotonic() + 30
            while other.get(f"/api/runs/{theirs.json()['id']}").json()["status"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            mine = api.start(api.conversation(), "FEED-PRIVATE")["id"]
            seen = []
            for kind, value in f.frames():
                if kind == "run":
                    seen.append(value["id"])
                    if value["id"] == mine and value["status"] in TERMINAL_STATUSES:
                        break
            assert set(seen) == {mine}  # their whole run came and went before mine: none of it here


def test_a_revoked_token_ends_the_feed(server: OnwardServer, api: Api) -> None:
    token = api.http.post("/api/tokens", json={"name": "feed"}).json()
    bearer = {"Authorization": f"Bearer {token['token']}"}
    with feed(server, bearer) as f:
        assert api.http.delete(f"/api/tokens/{token['id']}").status_code == 204
        comments = [value for kind, value in f.frames() if kind == "comment"]  # to the end of the stream
        assert comments[-1] == "credentials revoked"
    r = httpx.get(f"{server.url}/api/activity", headers=bearer)
    assert r.status_code == 401


def test_the_feed_needs_a_login(server: OnwardServer) -> None:
    r = httpx.get(f"{server.url}/api/activity")
    assert r.status_code == 401 and r.json()["error"]["message"]


def test_an_open_feed_does_not_hold_up_shutdown(llm: ScriptedLLM, tmp_path: Path) -> None:
    """A feed never ends by itself: the server ends it at shutdown (uvicorn would otherwise wait
    its whole graceful-shutdown timeout, 5 s, for every open tab)."""
    with OnwardServer(tmp_path / "home", llm.base_url, **SERVER_SETTINGS) as srv:
        f = Feed(srv, srv.auth_headers())
        try:
            frames = f.frames()
            assert next(frames) == ("comment", "connected")
            started = time.monotonic()
            srv.stop()
            took = time.monotonic() - started
            comments = [value for kind, value in frames if kind == "comment"]  # to the end of the stream
        finally:
            f.close()
    assert "server shutting down" in comments
    assert took < 3, f"shutdown took {took:.1f} s with a feed open"
