"""Exactly-once delivery from any point, against a real server over TCP (invariant 2)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.conftest import SERVER_SETTINGS
from tests.server.helpers import TERMINAL, Api

N_CHARS = 2500


@pytest.fixture(scope="module")
def server(llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnwardServer]:
    """A commit every millisecond: pieces of a message recorded before their batch is taken join
    into one event, so at the default 20 ms the 2,500 pieces would make only ~60 events; here
    they make hundreds, a long log to resume in."""
    home: Path = tmp_path_factory.mktemp("home")
    with OnwardServer(home, llm.base_url, **{**SERVER_SETTINGS, "flush_interval_ms": 1}) as srv:
        yield srv


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["text"] for e in events if e["type"] == "message.delta")


def _long_run(api: Api, llm: ScriptedLLM, marker: str) -> str:
    llm.script([{"text": "y" * N_CHARS, "chunk_chars": 1, "delay_ms": 0.5}], match=marker)
    cid = api.conversation()
    return str(api.start(cid, f"{marker}: stream a lot")["id"])


def test_sse_reader_resuming_at_random_points_reads_the_log_exactly(api: Api, llm: ScriptedLLM) -> None:
    rid = _long_run(api, llm, "RESUME-SSE")
    rng = random.Random(2)
    got: list[dict[str, Any]] = []
    reconnects = 0
    while not got or got[-1]["type"] not in TERMINAL:
        take = rng.randint(1, 10)
        # alternate the two ways of resuming: Last-Event-ID and ?after=
        stream = (
            api.sse(rid, last_event_id=len(got)) if reconnects % 2 else api.sse(rid, after=len(got))
        )
        for i, event in enumerate(stream):
            got.append(event)
            if i + 1 >= take or event["type"] in TERMINAL:
                break
        stream.close()
        reconnects += 1
    assert reconnects >= 50
    assert _text(got) == "y" * N_CHARS
    assert got == api.log(rid)
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))


def test_long_poll_reader_resuming_at_random_points_reads_the_log_exactly(api: Api, llm: ScriptedLLM) -> None:
    rid = _long_run(api, llm, "RESUME-POLL")
    rng = random.Random(3)
    got: list[dict[str, Any]] = []
    polls = 0
    while not got or got[-1]["type"] not in TERMINAL:
        r = api.http.get(
            f"/api/runs/{rid}/events", params={"after": len(got), "limit": rng.randint(1, 60), "wait": 5}
        )
        assert r.status_code == 200
        page = r.json()["events"]
        assert page, "a long-poll with wait returns at least one event of an active run"
        got.extend(page)
        polls += 1
    assert polls >= 50
    assert _text(got) == "y" * N_CHARS
    assert got == api.log(rid)
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))


def test_twenty_concurrent_readers_receive_identical_complete_logs(api: Api, llm: ScriptedLLM) -> None:
    rid = _long_run(api, llm, "TWENTY")
    results: list[list[dict[str, Any]]] = [[] for _ in range(20)]

    def read(i: int) -> None:
        results[i] = list(api.sse(rid))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stored = api.log(rid)
    assert stored[-1]["type"] == "run.completed"
    for log in results:
        assert log == stored


def test_reader_joining_after_the_end_gets_the_whole_log(api: Api, llm: ScriptedLLM) -> None:
    cid = api.conversation()
    rid = api.start(cid, "hello there")["id"]
    first = api.wait_terminal(rid)
    again = list(api.sse(rid))
    assert again == first
    assert list(api.sse(rid, after=first[-1]["seq"])) == []


def test_sse_sends_heartbeats_while_nothing_happens(api: Api, llm: ScriptedLLM) -> None:
    import httpx

    from tests.server.helpers import tool_call

    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="QUIET")
    cid = api.conversation()
    rid = api.start(cid, "QUIET")["id"]
    api.wait_for(rid, lambda e: e["type"] == "tool.output")
    heartbeats = 0
    with httpx.stream("GET", f"{api.base}/api/runs/{rid}/stream", headers=api.headers, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line == ": heartbeat":
                heartbeats += 1
                if heartbeats == 2:
                    break
    assert heartbeats == 2
    api.cancel(rid)
    assert api.wait_terminal(rid)[-1]["type"] == "run.cancelled"
