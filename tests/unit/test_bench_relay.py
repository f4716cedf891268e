"""The bench's floor (`bench.relay`) is only a calibration if it serves what the scenario reads from
Onward: every delta, once, in order, in Onward's frames, to a reader that follows and to one that
joins after the end. Real processes: the pacer and the relay, over TCP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench.client import Frame, delta_chars, event_json, event_ts, read_sse
from bench.harness import Pacer, Relay
from bench.report import describe_floor


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    tmp: Path = tmp_path_factory.mktemp("relay")
    pacer = Pacer(tmp / "pacer.log")
    try:
        served = Relay(tmp / "relay.log", pacer.base_url)
        try:
            yield served
        finally:
            served.stop()
    finally:
        pacer.stop()


def _start(url: str, text: str) -> str:
    cid = httpx.post(f"{url}/api/conversations", json={"title": "t"}).raise_for_status().json()["id"]
    r = httpx.post(f"{url}/api/conversations/{cid}/runs", json={"input": text})
    assert r.status_code == 202
    return str(r.json()["id"])


def _read(url: str, rid: str) -> list[Frame]:
    got: list[Frame] = []

    def on_frames(batch: list[Frame]) -> bool:
        got.extend(batch)
        return batch[-1].terminal

    asyncio.run(asyncio.wait_for(read_sse(url, rid, on_frames), 30))
    return got


def test_the_relay_serves_every_delta_once_in_order_in_onwards_frames(relay: Relay) -> None:
    rid = _start(relay.url, "BENCH 40x2ms")
    frames = _read(relay.url, rid)
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0].type == "run.started" and frames[-1].type == "run.completed"
    deltas = [f for f in frames if f.type == "message.delta"]
    assert sum(delta_chars(f.data) for f in deltas) == 40  # joined or not, each character once
    assert all(event_json(f.data)["run_id"] == rid and event_ts(f.data) > 0 for f in frames)

    late = _read(relay.url, rid)  # after the end: the whole log again, then the end of the body
    assert [(f.seq, f.type, f.data) for f in late] == [(f.seq, f.type, f.data) for f in frames]


def test_the_relay_answers_404_for_what_it_does_not_serve(relay: Relay) -> None:
    assert httpx.get(f"{relay.url}/api/runs/run_unknown/stream").status_code == 404
    assert httpx.get(f"{relay.url}/api/conversations").status_code == 404


def test_a_run_whose_llm_is_out_of_reach_fails_instead_of_hanging(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    unreachable = Relay(tmp_path / "relay.log", f"http://127.0.0.1:{closed}/v1")
    try:
        frames = _read(unreachable.url, _start(unreachable.url, "BENCH 5x2ms"))
    finally:
        unreachable.stop()
    assert [f.type for f in frames] == ["run.started", "run.failed"]
    assert "LLM connection failed" in event_json(frames[-1].data)["data"]["error"]


def test_the_table_compares_the_floor_with_onward_and_says_nothing_without_one() -> None:
    onward = {"runs": 500, "wall_ratio": 1.39, "event_latency_ms": {"p50": 55.4, "p99": 178.2},
              "server_cpu_us_per_event": 28.1}
    floor = {"wall_ratio": 1.05, "event_latency_ms": {"p50": 22.0, "p99": 30.4}, "server_cpu_us_per_event": 12.3}
    doc = {"scenarios": {"concurrency": {"details": {"scaling": [{**onward, "relay_floor": floor}]}}}}
    sentence = describe_floor(doc)
    assert "N = 500" in sentence
    assert "ratio 1.05, event latency p50 22 ms and p99 30 ms, 12 µs" in sentence
    assert "Onward: ratio 1.39, p50 55 ms and p99 178 ms, 28 µs" in sentence
    assert "repetitions" not in sentence
    repeats = [{"wall_ratio": r, "event_latency_ms_p99": p} for r, p in ((1.39, 178.2), (1.41, 190.4), (1.35, 150.6))]
    doc["scenarios"]["concurrency"]["details"]["scaling"][0]["repeats"] = repeats
    assert "the 3 repetitions: ratio 1.39, 1.41, 1.35, event latency p99 178, 190, 151 ms" in describe_floor(doc)
    assert describe_floor({"scenarios": {"concurrency": {"details": {"scaling": [onward]}}}}) == ""
    assert describe_floor({"scenarios": {}}) == ""
