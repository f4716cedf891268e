"""Scenario 6 — memory: resident set size per active run and per idle conversation.

Active runs: a fresh server is warmed with 20 short runs, then its VmRSS (/proc/<pid>/status, the
median of 5 samples over 1 s) is the baseline. N = 1,000 runs then stream slowly (one delta every
500 ms) while each is read by its own SSE connection from the client processes; once every reader
has received a delta, VmRSS is sampled again. Per active run = (active - baseline) ÷ N: the run's
task, its LLM connection, its SSE connection and subscription, its journal state. The runs are
then cancelled together, which also times a bulk Stop, and VmRSS is sampled after they ended.

Idle conversations: another fresh server, warmed the same way, gives the baseline; then M =
10,000 conversations are created, one in five with a short completed run (a user and an
assistant message, five events; runs for all of them would take minutes at today's run-creation
rate), the list is read, and VmRSS is sampled: per idle conversation =
(after - baseline) ÷ M. In full mode the server is then restarted on the same home and warmed the same way:
(restarted - baseline) ÷ M says what a process holds for conversations it merely has on disk.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from queue import Queue
from typing import Any

from bench.client import Api, Frame
from bench.harness import Context, Result, rss_kb
from bench.pool import run_async, split
from onward.testing.server import OnwardServer

NAME = "memory"
TITLE = "RSS per active run and per idle conversation"
ACTIVE = "BENCH-RSS-ACTIVE"
SHORT = "BENCH-RSS-SHORT"
WARMUP = 20  # short runs before a baseline (10 in quick mode)
SETTLE_S = 1.0  # pause before sampling RSS (0.3 s in quick mode)
ACTIVE_TURN = {"text": "x" * 600, "chunk_chars": 1, "delay_ms": 500}
RUN_EVERY = 5  # one idle conversation in RUN_EVERY gets a completed run


def run(ctx: Context) -> Result:
    ctx.llm.script(ACTIVE, [ACTIVE_TURN])
    ctx.llm.script(SHORT, [{"text": "ok"}])
    active_runs = ctx.size(1000, 100)
    conversations = ctx.size(10_000, 300)
    details: dict[str, Any] = {"settings": {"active_turn": {**ACTIVE_TURN, "text": "x * 600"}, "warmup_runs": ctx.size(WARMUP, WARMUP // 2)}}
    with ThreadPoolExecutor(1) as background:
        # The idle part's server starts while the active part runs: CPU load does not move RSS.
        idle_server = background.submit(ctx.start_server, f"{NAME}-idle")
        try:
            with ctx.server(f"{NAME}-active", fresh=True) as srv:
                per_run = _active(ctx, srv, active_runs, details)
        except BaseException:
            ctx.stop_server(idle_server.result())
            raise
        per_conversation = _idle(ctx, idle_server.result(), conversations, details)
    return Result(
        metrics={"rss_kb_per_active_run": per_run, "rss_kb_per_idle_conversation": per_conversation},
        details=details,
    )


def sample_rss(pid: int, samples: int = 5, every: float = 0.2) -> int:
    values = []
    for i in range(samples):
        if i:
            time.sleep(every)
        values.append(rss_kb(pid))
    return int(statistics.median(values))


async def _short_runs(api: Api, n: int, run_every: int = 1, parallel: int = 16) -> None:
    """n conversations; every `run_every`-th gets one short run, read to its end."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with gate:
            cid = await api.conversation()
            if i % run_every == 0:
                rid = (await api.start_run(cid, SHORT))["id"]
                await api.sse(rid, lambda batch: batch[-1].terminal)

    await asyncio.gather(*(one(i) for i in range(n)))


def _warm(ctx: Context, url: str, headers: dict[str, str]) -> None:
    async def main() -> None:
        api = Api(url, headers)
        try:
            await _short_runs(api, ctx.size(WARMUP, WARMUP // 2))
            await api.conversations()
        finally:
            await api.aclose()

    run_async(main())
    _settle(ctx)


def _settle(ctx: Context) -> None:
    time.sleep(0.3 if ctx.quick else SETTLE_S)


# active runs ---------------------------------------------------------------------------------


def _active_job(args: tuple[str, dict[str, str], list[str], Queue[Any]]) -> tuple[int, int]:
    """Start a run in each conversation, read them all; report 'ready' once each had a delta."""
    url, headers, cids, ready = args

    async def main() -> tuple[int, int]:
        api = Api(url, headers)
        pending = len(cids)
        completed = 0

        async def follow(cid: str) -> str:
            nonlocal pending
            rid = (await api.start_run(cid, ACTIVE))["id"]
            seen_delta = False
            terminal: list[str] = []

            def on_frames(batch: list[Frame]) -> bool:
                nonlocal pending, seen_delta
                if not seen_delta and any(f.type == "message.delta" for f in batch):
                    seen_delta = True
                    pending -= 1
                    if pending == 0:
                        ready.put(len(cids))
                if batch[-1].terminal:
                    terminal.append(batch[-1].type)
                    return True
                return False

            await api.sse(rid, on_frames)
            return terminal[0] if terminal else ""

        try:
            terminals = await asyncio.gather(*(follow(c) for c in cids))
            completed = sum(1 for t in terminals if t)
        finally:
            await api.aclose()
        return len(cids), completed

    return run_async(main())


def _active(ctx: Context, srv: OnwardServer, n: int, details: dict[str, Any]) -> float:
    headers = srv.auth_headers()
    _warm(ctx, srv.url, headers)
    base = sample_rss(srv.pid)
    ctx.progress(f"baseline RSS {base / 1024:.1f} MiB; starting {n} slowly streaming runs")

    async def conversations() -> list[str]:
        api = Api(srv.url, headers)
        try:
            return [await api.conversation() for _ in range(n)]
        finally:
            await api.aclose()

    cids = run_async(conversations())
    ready = ctx.pool.queue()
    shares = split(cids, ctx.pool.processes)
    t0 = time.monotonic()
    futures = ctx.pool.submit(_active_job, [(srv.url, headers, share, ready) for share in shares])
    for _ in shares:
        ready.get(timeout=300)
    ramp = time.monotonic() - t0
    _settle(ctx)
    active = sample_rss(srv.pid)
    per_run = round((active - base) / n, 1)
    ctx.progress(f"{n} runs streaming (ramp {ramp:.1f} s): RSS {active / 1024:.1f} MiB → {per_run} KB per run")

    async def cancel_all() -> tuple[float, int]:
        api = Api(srv.url, headers)
        gate = asyncio.Semaphore(32)

        async def cancel(rid: str) -> None:
            async with gate:
                await api.cancel(rid)

        try:
            t = time.monotonic()
            runs = await api.runs(active=True, limit=1000)
            await asyncio.gather(*(cancel(r["id"]) for r in runs))
            return time.monotonic() - t, len(runs)
        finally:
            await api.aclose()

    cancel_s, cancelled = run_async(cancel_all())
    ended = sum(done for _, done in (f.result(timeout=300) for f in futures))
    stopped_s = time.monotonic() - t0 - ramp
    _settle(ctx)
    after = sample_rss(srv.pid)
    ctx.progress(f"cancelled {cancelled} runs in {cancel_s:.1f} s; RSS after they ended {after / 1024:.1f} MiB")
    details["active"] = {
        "runs": n,
        "client_processes": len(shares),
        "rss_kb_baseline": base,
        "rss_kb_active": active,
        "rss_kb_after_ended": after,
        "ramp_s": round(ramp, 2),
        "cancel_requests_s": round(cancel_s, 2),
        "cancelled": cancelled,
        "readers_reached_terminal": ended,
        "all_stopped_s": round(stopped_s, 2),
    }
    return per_run


# idle conversations --------------------------------------------------------------------------


def _short_job(args: tuple[str, dict[str, str], int]) -> int:
    url, headers, n = args

    async def main() -> int:
        api = Api(url, headers)
        try:
            await _short_runs(api, n, RUN_EVERY)
        finally:
            await api.aclose()
        return n

    return run_async(main())


def _idle(ctx: Context, srv: OnwardServer, m: int, details: dict[str, Any]) -> float:
    home = srv.home
    try:
        headers = srv.auth_headers()
        _warm(ctx, srv.url, headers)
        base = sample_rss(srv.pid)
        ctx.progress(f"baseline RSS {base / 1024:.1f} MiB; creating {m} conversations, one in {RUN_EVERY} with a run")
        t0 = time.monotonic()
        parts = split(range(m), ctx.pool.processes)
        with_runs = sum(len(range(0, len(p), RUN_EVERY)) for p in parts)
        ctx.pool.run(_short_job, [(srv.url, headers, len(p)) for p in parts])
        created_s = time.monotonic() - t0

        async def listing() -> int:
            api = Api(srv.url, headers)
            try:
                return len(await api.conversations())
            finally:
                await api.aclose()

        listed = run_async(listing())
        _settle(ctx)
        live = sample_rss(srv.pid)
    finally:
        ctx.stop_server(srv)
    db = home / "onward.db"
    db_bytes = db.stat().st_size + sum(p.stat().st_size for p in home.glob("onward.db-*"))
    restarted: int | None = None
    if not ctx.quick:
        with ctx.server(f"{NAME}-idle", home=home) as srv:
            _warm(ctx, srv.url, srv.auth_headers())
            restarted = sample_rss(srv.pid)
    per_live = round((live - base) / m, 3)
    per_restart = None if restarted is None else round((restarted - base) / m, 3)
    ctx.progress(
        f"{m} conversations in {created_s:.1f} s: {per_live} KB each in the live process; "
        f"{'' if per_restart is None else f'{per_restart} KB after a restart, '}"
        f"{db_bytes / m / 1024:.1f} KB each on disk"
    )
    details["idle"] = {
        "conversations": m,
        "with_a_run": with_runs,
        "create_s": round(created_s, 1),
        "listed": listed,
        "rss_kb_baseline": base,
        "rss_kb_live": live,
        "rss_kb_restarted": restarted,
        "rss_kb_per_conversation_live": per_live,
        "rss_kb_per_conversation_restarted": per_restart,
        "db_kb_per_conversation": round(db_bytes / m / 1024, 2),
    }
    return per_live
