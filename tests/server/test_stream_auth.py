"""An open stream outlives the request that authorized it: it ends when its credential stops being
valid (the server checks every `stream_auth_recheck_s`, 0.3 s here), while the run goes on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import TERMINAL, Api, sse

SLOW = {"text": "s" * 300, "chunk_chars": 1, "delay_ms": 50}  # a run of ~15 s


@contextlib.contextmanager
def session(server: OnwardServer, name: str) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """A logged-in client of a new user, and the CSRF header its changes need."""
    server.create_user(name, f"{name}-password-1")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/api/auth/login", json={"username": name, "password": f"{name}-password-1"})
        assert r.status_code == 200, r.text
        yield http, {"X-CSRF-Token": r.json()["csrf_token"]}


def still_running(http: httpx.Client, rid: str) -> bool:
    return bool(http.get(f"/api/runs/{rid}").json()["status"] == "running")


def test_revoking_a_token_ends_its_open_sse_stream(server: OnwardServer, llm: ScriptedLLM) -> None:
    llm.script([SLOW], match="REVOKE-SSE")
    with session(server, "sam") as (http, csrf):
        token = http.post("/api/tokens", json={"name": "script"}, headers=csrf).json()
        bearer = {"Authorization": f"Bearer {token['token']}"}
        api = Api(server.url, bearer)
        try:
            rid = api.start(api.conversation(), "REVOKE-SSE")["id"]
        finally:
            api.http.close()
        events: list[dict[str, Any]] = []
        revoked_at = 0.0
        for event in sse(server.url, rid, auth=bearer):
            events.append(event)
            if len(events) == 5:
                assert http.delete(f"/api/tokens/{token['id']}", headers=csrf).status_code == 204
                revoked_at = time.monotonic()
        assert time.monotonic() - revoked_at < 5  # ended by the revocation, not by the run
        assert len(events) >= 5 and events[-1]["type"] not in TERMINAL
        assert still_running(http, rid)
        r = httpx.get(f"{server.url}/api/runs/{rid}/stream", headers=bearer)  # what a reconnect gets
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        http.post(f"/api/runs/{rid}/cancel", headers=csrf)


def test_logging_out_closes_the_sessions_websocket(server: OnwardServer, llm: ScriptedLLM) -> None:
    llm.script([SLOW], match="LOGOUT-WS")
    with session(server, "wes") as (http, csrf):
        cid = http.post("/api/conversations", json={}, headers=csrf).json()["id"]
        rid = http.post(f"/api/conversations/{cid}/runs", json={"input": "LOGOUT-WS"}, headers=csrf).json()["id"]
        cookie = {"Cookie": f"onward_session={http.cookies['onward_session']}"}
        url = f"ws://127.0.0.1:{server.port}/api/runs/{rid}/ws"
        with connect(url, proxy=None, additional_headers=cookie, max_queue=None) as ws:
            for _ in range(5):
                ws.recv(timeout=10)
            assert http.post("/api/auth/logout", headers=csrf).status_code in (200, 204)
            logged_out = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert time.monotonic() - logged_out < 5
    with session(server, "wes2") as (other, _):
        assert other.get(f"/api/runs/{rid}").status_code == 404  # (it is wes's run)
    bearer = server.auth_headers()
    assert httpx.get(f"{server.url}/api/runs/{rid}", headers=bearer).status_code == 404
