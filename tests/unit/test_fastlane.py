"""The fast lane (api/fastlane.py) answers exactly as FastAPI's own routes for the run start and
the event stream: every request below is sent once through the lane and once with the lane's
routes taken out, and the answers must match. The app runs in-process on a real SQLite file, with
the scripted LLM over real HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from onward.api import fastlane, runs
from onward.app import create_app
from onward.config import Settings
from onward.testing.fake_llm import ScriptedLLM

# what differs between two runs: ids, times
_ID = re.compile(r'"(\w*id|\w*_at|ts)":("[^"]*"|[0-9.e+-]+)')


@dataclass
class Lab:
    app: FastAPI
    http: httpx.AsyncClient
    other: httpx.AsyncClient  # another user's token
    lane: list[BaseRoute]
    entered: list[str]  # paths the lane's routes were entered with
    handed: list[str]  # paths the lane handed over to FastAPI's route

    @contextmanager
    def without_lane(self) -> Iterator[None]:
        routes = self.app.router.routes
        kept = [r for r in routes if r not in self.lane]
        assert len(kept) == len(routes) - 2
        self.app.router.routes[:] = kept
        try:
            yield
        finally:
            self.app.router.routes[0:0] = self.lane

    async def conversation(self) -> str:
        r = await self.http.post("/api/conversations", json={})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@pytest.fixture
async def lab(tmp_path, scripted_llm: ScriptedLLM) -> AsyncIterator[Lab]:  # type: ignore[no-untyped-def]
    scripted_llm.script([{"text": "lane"}])
    settings = Settings(home=tmp_path, llm_base_url=scripted_llm.base_url, llm_model="scripted", llm_api_key="x")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        tokens = []
        for name in ("alice", "bob"):
            account = await svc.accounts.add_user(name, f"{name}-long-password")
            tokens.append((await svc.accounts.create_token(account.id, "lane"))[1])
        transport = httpx.ASGITransport(app=app)
        clients = [
            httpx.AsyncClient(transport=transport, base_url="http://lane", headers={"Authorization": f"Bearer {t}"})
            for t in tokens
        ]
        lane = [r for r in app.router.routes if getattr(r, "name", "").endswith("_lane")]
        entered: list[str] = []
        handed: list[str] = []
        for route in lane:  # count what the lane is asked and what it hands over, so a case cannot
            assert isinstance(route, Route)  # compare the lane with itself or FastAPI with itself
            endpoint = route.app
            endpoint.reference = _counting(endpoint.reference, handed)  # type: ignore[attr-defined]
            route.app = _counting(endpoint, entered)
        yield Lab(app, clients[0], clients[1], lane, entered, handed)
        for client in clients:
            await client.aclose()


def _counting(app: ASGIApp, entered: list[str]) -> ASGIApp:
    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        entered.append(scope["path"])
        await app(scope, receive, send)

    return counted


async def _both(lab: Lab, send: Any, served: bool) -> tuple[httpx.Response, httpx.Response]:
    """The answer through the lane and through FastAPI's route alone; `served`: the lane answers
    this request itself (else it must hand it over)."""
    lab.entered.clear()  # what set the case up went through the lane too
    lab.handed.clear()
    through_lane = await send()
    assert len(lab.entered) == 1
    assert len(lab.handed) == (0 if served else 1), "served by the lane" if served else "handed over"
    with lab.without_lane():
        through_fastapi = await send()
    assert len(lab.entered) == 1
    return through_lane, through_fastapi


def _same(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.headers.get("content-type") == b.headers.get("content-type")
    assert _ID.sub("", a.text) == _ID.sub("", b.text)


# (case, request, served by the lane itself)
BODIES: list[tuple[str, dict[str, Any], bool]] = [
    ("well formed", {"json": {"input": "hello"}}, True),
    ("with a model and if_busy", {"json": {"input": "hello", "model": "default", "if_busy": "reject"}}, True),
    ("extra fields", {"json": {"input": "hello", "colour": "blue"}}, True),
    ("json with a charset", {"content": b'{"input": "hello"}', "headers": {"content-type": "application/json; charset=utf-8"}}, True),
    ("no content type", {"content": b'{"input": "hello"}'}, False),  # FastAPI: 422
    ("an empty content type", {"content": b'{"input": "hello"}', "headers": {"content-type": ""}}, False),
    ("a +json type", {"content": b'{"input": "hello"}', "headers": {"content-type": "application/vnd.x+json"}}, True),
    ("text/plain", {"content": b'{"input": "hello"}', "headers": {"content-type": "text/plain"}}, False),
    ("malformed json", {"content": b'{"input": ', "headers": {"content-type": "application/json"}}, False),
    ("empty body", {"content": b"", "headers": {"content-type": "application/json"}}, False),
    ("missing input", {"json": {}}, False),
    ("input not a string", {"json": {"input": 5}}, False),
    ("not an object", {"json": ["hello"]}, False),
    ("unknown if_busy", {"json": {"input": "hello", "if_busy": "never"}}, False),
    ("empty input", {"json": {"input": "  "}}, True),  # a valid body: the service says 400
    ("unknown model", {"json": {"input": "hello", "model": "nope"}}, True),
]


@pytest.mark.parametrize("case, kwargs, served", BODIES, ids=[c for c, _, _ in BODIES])
async def test_a_run_start_is_answered_as_fastapi_answers_it(
    lab: Lab, case: str, kwargs: dict[str, Any], served: bool
) -> None:
    conversations = [await lab.conversation(), await lab.conversation()]

    async def send() -> httpx.Response:
        return await lab.http.post(f"/api/conversations/{conversations.pop()}/runs", **kwargs)

    _same(*await _both(lab, send, served))


@pytest.mark.parametrize(
    "who, target, body, served",
    [
        ("nobody", "mine", {"input": "hello"}, True),
        ("nobody", "mine", {"input": 5}, False),  # dependencies fail first, as in FastAPI
        ("bob", "mine", {"input": "hello"}, True),  # another user's conversation: 404
        ("alice", "unknown", {"input": "hello"}, True),
        ("alice", "busy", {"input": "hello"}, True),  # 409 while a run is active
    ],
)
async def test_run_start_errors_are_fastapis(
    lab: Lab, who: str, target: str, body: dict[str, Any], served: bool
) -> None:
    cid = await lab.conversation()
    if target == "busy":
        r = await lab.http.post(f"/api/conversations/{cid}/runs", json={"input": "first"})
        assert r.status_code == 202
    path = f"/api/conversations/{cid if target != 'unknown' else 'conv_nope'}/runs"
    client = lab.other if who == "bob" else lab.http

    async def send() -> httpx.Response:
        headers = {"Authorization": ""} if who == "nobody" else {}
        return await client.post(path, json=body, headers=headers)

    a, b = await _both(lab, send, served)
    _same(a, b)
    assert a.status_code >= 400


async def _finished_run(lab: Lab) -> str:
    cid = await lab.conversation()
    rid = str((await lab.http.post(f"/api/conversations/{cid}/runs", json={"input": "hello"})).json()["id"])
    r = await lab.http.get(f"/api/runs/{rid}/events", params={"wait": 5, "after": 0})
    while '"status":"completed"' not in r.text:
        r = await lab.http.get(f"/api/runs/{rid}/events", params={"wait": 5, "after": r.json()["last_seq"]})
    return rid


@pytest.mark.parametrize(
    "query, headers, served",
    [
        ("", {}, True),
        ("?after=2", {}, True),
        ("?after=002", {}, True),
        ("", {"Last-Event-ID": "3"}, True),
        ("?after=1", {"Last-Event-ID": "x"}, True),
        ("?after=-1", {}, False),
        ("?after=abc", {}, False),
        ("?after=", {}, False),
        ("?after=1&after=2", {}, False),
        ("?after=99", {}, True),  # beyond the run's last event: the endpoint says 400
        ("?other=1", {}, False),
    ],
)
async def test_a_stream_is_answered_as_fastapi_answers_it(
    lab: Lab, query: str, headers: dict[str, str], served: bool
) -> None:
    rid = await _finished_run(lab)

    async def send() -> httpx.Response:
        return await lab.http.get(f"/api/runs/{rid}/stream{query}", headers=headers)

    a, b = await _both(lab, send, served)
    _same(a, b)
    if a.status_code == 200:
        assert "event: run.completed" in a.text


@pytest.mark.parametrize("who, target", [("nobody", "mine"), ("bob", "mine"), ("alice", "unknown")])
async def test_stream_errors_are_fastapis(lab: Lab, who: str, target: str) -> None:
    rid = await _finished_run(lab) if target == "mine" else "run_nope"
    client = lab.other if who == "bob" else lab.http

    async def send() -> httpx.Response:
        return await client.get(f"/api/runs/{rid}/stream", headers={"Authorization": ""} if who == "nobody" else {})

    a, b = await _both(lab, send, served=True)
    _same(a, b)
    assert a.status_code in (401, 404)


def test_the_lane_reproduces_everything_the_fastapi_routes_ask_for() -> None:
    """The lane calls the endpoint functions with what it parsed itself: a new parameter or
    dependency on either route would be skipped by the lane. Change api/fastlane.py with it."""
    expected = {
        "start_run": (["cid"], [], [], ["body"], ["services", "current_user"]),
        "stream_run": (["rid"], ["after"], ["last_event_id"], [], ["services", "current_user"]),
    }
    for route in runs.router.routes:
        if isinstance(route, APIRoute) and route.name in expected:
            d = route.dependant
            found = (
                [p.name for p in d.path_params],
                [p.name for p in d.query_params],
                [p.name for p in d.header_params],
                [p.name for p in d.body_params],
                [getattr(s.call, "__name__", "") for s in d.dependencies],
            )
            assert found == expected.pop(route.name), route.name
            assert not d.cookie_params
    assert not expected
    assert [getattr(r, "name", None) for r in fastlane.routes(runs.router)] == ["start_run_lane", "stream_run_lane"]
