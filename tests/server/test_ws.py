"""Run events over WebSocket: the same exactly-once stream as SSE, resumable with ?after=."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import TERMINAL, Api


def _ws_url(server: OnwardServer, rid: str, after: int = 0) -> str:
    return f"ws://127.0.0.1:{server.port}/api/runs/{rid}/ws?after={after}"


def _read(server: OnwardServer, rid: str, after: int = 0, take: int | None = None, **kw: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    # max_queue=None: a reader that stops after `take` events still reads what is in flight, so it
    # sees the server's reply to its close at once (with a full queue it waited close_timeout, 10 s)
    headers = kw.pop("headers", server.auth_headers())
    with connect(_ws_url(server, rid, after), proxy=None, additional_headers=headers, max_queue=None, **kw) as ws:
        try:
            while take is None or len(events) < take:
                events.append(json.loads(ws.recv(timeout=30)))
        except ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != 1000:
                raise
    return events


def test_websocket_reader_resuming_gets_the_log_exactly(server: OnwardServer, api: Api, llm: ScriptedLLM) -> None:
    llm.script([{"text": "w" * 400, "chunk_chars": 1, "delay_ms": 1}], match="WS-RESUME")
    cid = api.conversation()
    rid = api.start(cid, "WS-RESUME")["id"]
    got: list[dict[str, Any]] = []
    while not got or got[-1]["type"] not in TERMINAL:
        got.extend(_read(server, rid, after=len(got), take=37))
    assert got == api.log(rid)
    assert _read(server, rid, after=len(got)) == []


def test_websocket_needs_auth_and_ownership(server: OnwardServer, api: Api) -> None:
    cid = api.conversation()
    rid = api.start(cid, "hello")["id"]
    api.wait_terminal(rid)
    for headers, code in (({}, 4401), ({"Authorization": "Bearer nope"}, 4401)):
        with pytest.raises((ConnectionClosed, InvalidStatus)) as info:
            _read(server, rid, headers=headers)
        assert _close_code(info.value) == code
    with pytest.raises((ConnectionClosed, InvalidStatus)) as info:
        _read(server, "run_unknown")
    assert _close_code(info.value) == 4404
    other = server.login(*_second_user(server))
    with pytest.raises((ConnectionClosed, InvalidStatus)) as info:
        _read(server, rid, headers=other)
    assert _close_code(info.value) == 4404


def _second_user(server: OnwardServer) -> tuple[str, str]:
    try:
        server.create_user("wsbob", "a-long-password-for-bob")
    except Exception:  # created by an earlier run of this module's server
        pass
    return "wsbob", "a-long-password-for-bob"


def _close_code(exc: BaseException) -> int | None:
    if isinstance(exc, ConnectionClosed):
        return exc.rcvd.code if exc.rcvd else None
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code
    return None


def test_cookie_websocket_from_another_origin_is_refused(server: OnwardServer, api: Api) -> None:
    import httpx

    r = httpx.post(f"{server.url}/api/auth/login", json={"username": "admin", "password": server.admin_password})
    assert r.status_code == 200
    cookie = f"onward_session={r.cookies['onward_session']}"
    cid = api.conversation()
    rid = api.start(cid, "hello")["id"]
    api.wait_terminal(rid)
    with pytest.raises(ConnectionClosed) as info:
        _read(server, rid, headers={"Cookie": cookie}, origin="http://evil.example")
    assert _close_code(info.value) == 4403
    own = _read(server, rid, headers={"Cookie": cookie}, origin=f"http://127.0.0.1:{server.port}")
    assert own == api.log(rid)
