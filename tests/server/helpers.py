"""Small clients for tests: plain httpx against the real server, and a raw SSE reader."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"run.completed", "run.cancelled", "run.failed", "run.interrupted"}


class Api:
    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base = base_url
        self.headers = dict(headers or {})
        self.http = httpx.Client(base_url=base_url, timeout=30, headers=self.headers)

    def conversation(self, title: str = "test") -> str:
        r = self.http.post("/api/conversations", json={"title": title})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def start(self, cid: str, text: str, **extra: Any) -> dict[str, Any]:
        r = self.http.post(f"/api/conversations/{cid}/runs", json={"input": text, **extra})
        assert r.status_code == 202, r.text
        return dict(r.json())

    def run(self, rid: str) -> dict[str, Any]:
        r = self.http.get(f"/api/runs/{rid}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def cancel(self, rid: str) -> dict[str, Any]:
        r = self.http.post(f"/api/runs/{rid}/cancel")
        assert r.status_code == 202, r.text
        return dict(r.json())

    def log(self, rid: str) -> list[dict[str, Any]]:
        """The stored log, read by long-poll pages without waiting."""
        out: list[dict[str, Any]] = []
        while True:
            r = self.http.get(f"/api/runs/{rid}/events", params={"after": len(out), "limit": 10_000})
            assert r.status_code == 200, r.text
            page = r.json()["events"]
            if not page:
                return out
            out.extend(page)

    def messages(self, cid: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/api/conversations/{cid}")
        assert r.status_code == 200, r.text
        return list(r.json()["messages"])

    def sse(self, rid: str, after: int = 0, last_event_id: int | None = None, timeout: float = 30) -> Iterator[dict[str, Any]]:
        return sse(self.base, rid, after, last_event_id, timeout, self.headers)

    def wait_terminal(self, rid: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Follow the run to its end over SSE; returns every event."""
        events = list(self.sse(rid, timeout=timeout))
        assert events and events[-1]["type"] in TERMINAL, events[-3:]
        return events

    def wait_for(self, rid: str, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        """The first event (from the start) that satisfies predicate; fails on the terminal event."""
        for event in self.sse(rid, timeout=timeout):
            if predicate(event):
                return event
            assert event["type"] not in TERMINAL, f"run ended first: {event}"
        raise AssertionError("stream ended without the expected event")


def sse(
    base: str,
    rid: str,
    after: int = 0,
    last_event_id: int | None = None,
    timeout: float = 30,
    auth: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Parse the SSE stream frame by frame; closing the generator closes the connection."""
    headers = dict(auth or {})
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    params = {"after": after} if after else {}
    with httpx.stream(
        "GET", f"{base}/api/runs/{rid}/stream", params=params, headers=headers, timeout=timeout
    ) as r:
        assert r.status_code == 200, r.read()
        data: list[str] = []
        ident: str | None = None
        for line in r.iter_lines():
            if line == "":
                if data:
                    event = json.loads("\n".join(data))
                    assert ident == str(event["seq"]), (ident, event["seq"])
                    yield event
                data, ident = [], None
            elif line.startswith(":"):
                continue
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line.startswith("id:"):
                ident = line[3:].strip()


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run_pids(rid: str) -> dict[int, int]:
    """Host pid → the pid the process sees itself as, for every process a run's commands started
    (found by the ONWARD_RUN_ID marker in their environment, as crash recovery finds them). In the
    bubblewrap sandbox a command has its own pid namespace, so `echo $$` prints the inner pid."""
    marker = f"ONWARD_RUN_ID={rid}".encode()
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [entry.name])
        found[int(entry.name)] = int(nspid[-1])
    return found


def host_pids(rid: str, printed: list[int]) -> list[int]:
    """The host pids of the processes of run `rid` that printed `printed` as their own pid."""
    by_inner = {inner: host for host, inner in run_pids(rid).items() if alive(host)}
    missing = [p for p in printed if p not in by_inner]
    assert not missing, f"no live process of run {rid} has pid {missing} (inside its sandbox)"
    return [by_inner[p] for p in printed]


def wait_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Pids still alive after `timeout` (zombies count as dead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        living = [p for p in pids if alive(p)]
        if not living:
            return []
        time.sleep(0.01)
    return [p for p in pids if alive(p)]


def tool_call(name: str, arguments: Any, call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"name": name, "arguments": arguments}
    if call_id:
        call["id"] = call_id
    return call
