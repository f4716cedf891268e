"""Scenario 4 — Stop: cancel request → `run.cancelled` at a reader, with the command's process dead.

The LLM calls `run_command` with `echo "pid $$"; exec sleep 60`, so the printed pid is the sleep
itself. For each of N runs, one after another: follow the run's SSE stream until the
`tool.output` carrying the pid arrives (the command is running); find the run's processes on the
host by the ONWARD_RUN_ID marker in their environment (under bubblewrap `$$` is a pid of the
sandbox's own pid namespace; the sleep is the marked process whose innermost pid is the printed
one); start the clock, POST /api/runs/{id}/cancel, and stop the clock when `run.cancelled`
arrives on the same stream. Then every marked process is checked at once: it must be gone, a
zombie, or dying (SIGKILL pending or already in the kernel's exit path: it can run no more code;
these are counted apart). Any process still alive is counted, and waited for, so none pile up.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.client import Api, Frame, event_json
from bench.harness import Context, Result, namespace_pid, process_state, run_processes, wait_dead
from bench.pool import run_async
from bench.stats import downsample, summary
from onward.testing.server import OnwardServer

NAME = "stop"
TITLE = "Cancel a run inside `sleep 60` → run.cancelled, process dead"
MATCH = "BENCH-STOP"
COMMAND = 'echo "pid $$"; exec sleep 60'
WARMUP = 3
_PID = re.compile(r"pid (\d+)")


def run(ctx: Context) -> Result:
    ctx.llm.script(MATCH, [{"tool_calls": [{"name": "run_command", "arguments": {"command": COMMAND}}]}])
    n = ctx.size(200, 10)
    with ctx.server(NAME) as srv:
        return run_async(_measure(ctx, srv, n))


@dataclass
class _Stop:
    pid: int | None = None  # the sleep, as the host sees it
    processes: tuple[int, ...] = ()  # every process of the run's command (sandbox, shell, sleep)
    terminal: str = ""
    t_cancel: float = 0.0  # perf_counter() when the cancel POST was sent
    t_posted: float = 0.0  # … when it returned
    t_terminal: float = 0.0  # … when the terminal event arrived


async def _stop_one(api: Api, cid: str, text: str) -> _Stop:
    """Start a run, wait until its command printed its pid, cancel it, read to the terminal."""
    rid = (await api.start_run(cid, text))["id"]
    out = _Stop()
    cancels: list[asyncio.Task[dict[str, object]]] = []

    def on_frames(batch: list[Frame]) -> bool:
        for f in batch:
            if out.pid is None and f.type == "tool.output":
                found = _PID.search(event_json(f.data)["data"]["text"])
                if found:
                    printed = int(found.group(1))
                    out.processes = tuple(run_processes(rid))
                    out.pid = next((p for p in out.processes if _inner(p) == printed), None)
                    if out.pid is None:
                        raise RuntimeError(f"run {rid}: no process of the run has pid {printed} in its namespace")
                    out.t_cancel = time.perf_counter()
                    cancels.append(asyncio.ensure_future(api.cancel(rid)))
        if batch[-1].terminal:
            out.t_terminal = time.perf_counter()
            out.terminal = batch[-1].type
            return True
        return False

    await api.sse(rid, on_frames)
    for task in cancels:
        await task
        out.t_posted = time.perf_counter()
    if out.pid is None:
        raise RuntimeError(f"run {rid} ended ({out.terminal}) before its command printed a pid")
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _inner(pid: int) -> int | None:
    try:
        return namespace_pid(pid)
    except OSError:
        return None


async def _measure(ctx: Context, srv: OnwardServer, n: int) -> Result:
    api = Api(srv.url, srv.auth_headers())
    stop_ms: list[float] = []
    post_ms: list[float] = []
    dead_after_ms: list[float] = []
    alive = 0
    wrong_terminal = 0
    survivors: Counter[str] = Counter()
    dying = 0  # stops where a process was killed but not yet torn down by the kernel
    try:
        sandbox = (await api.me()).get("sandbox")
        cids = [await api.conversation() for _ in range(n + WARMUP)]
        for i, cid in enumerate(cids):
            one = await _stop_one(api, cid, f"{MATCH} {i}")
            states = {p: process_state(p) for p in one.processes}
            living = [p for p, state in states.items() if state == "alive"]
            still_alive = bool(living)
            for pid in living:
                survivors[_comm(pid) + (" (the sleep)" if pid == one.pid else "")] += 1
            dying += any(state == "dying" for state in states.values())
            for pid in living:
                wait_dead(pid, timeout=10)  # nothing else runs meanwhile: blocking is fine
            if i < WARMUP:
                continue
            stop_ms.append((one.t_terminal - one.t_cancel) * 1000)
            post_ms.append((one.t_posted - one.t_cancel) * 1000)
            alive += still_alive
            if still_alive:
                dead_after_ms.append((time.perf_counter() - one.t_cancel) * 1000)
            wrong_terminal += one.terminal != "run.cancelled"
            if (i - WARMUP + 1) % 50 == 0:
                ctx.progress(f"{i - WARMUP + 1}/{n} stops")
    finally:
        await api.aclose()
    stops = summary(stop_ms)
    problems = []
    if alive:
        problems.append(f"stop: {alive} of {n} commands were still alive when run.cancelled arrived")
    if wrong_terminal:
        problems.append(f"stop: {wrong_terminal} runs ended with something other than run.cancelled")
    return Result(
        metrics={"stop_ms_p50": stops["p50"], "stop_ms_p99": stops["p99"], "stop_processes_alive": alive},
        samples={"stop_ms": downsample(stop_ms)},
        details={
            "stops": n,
            "warmup_stops": WARMUP,
            "command": COMMAND,
            "sandbox": sandbox,
            "stop_ms": stops,
            "cancel_post_ms": summary(post_ms),
            "alive_at_terminal": alive,
            "survivors_by_name": dict(survivors),
            "killed_not_yet_reaped": dying,
            "dead_after_ms": summary(dead_after_ms),
            "wrong_terminal": wrong_terminal,
        },
        problems=problems,
    )
