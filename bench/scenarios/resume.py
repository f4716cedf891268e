"""Scenario 5 — exact resume: readers that drop and reconnect every ~50 ms during a fast run.

The run streams 5,000 deltas 1 ms apart (the pacer, model `paced`): a fast run of fixed length,
so the scenario lasts about 5 s however fast the server ingests. 100 readers (spread over the client
processes) each loop: open the SSE stream after the last seq they hold — half by the
`Last-Event-ID` header, half by `?after=` — read for a random 25-75 ms (at least until one new
event came), then drop the connection, until the terminal event. Every frame is checked against
the reader's last seq: seq ≤ last is a duplicate, seq > last + 1 leaves a gap (each missing seq
counts). Catch-up is the time from starting a reconnect to its first new event (TCP connect,
request, replay from the store). At the end each reader must hold exactly the run's `last_seq`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from bench.client import Api, Frame
from bench.harness import PACED_MODEL, Context, Result
from bench.pool import run_async, split, start_time
from bench.stats import downsample, summary
from onward.testing.server import OnwardServer

NAME = "resume"
TITLE = "100 readers reconnecting every ~50 ms during a fast run"
MATCH = "BENCH-RESUME"
HOLD_S = (0.025, 0.075)
DELAY_MS = 1


@dataclass
class ReaderLog:
    last: int = 0
    duplicates: int = 0
    gaps: int = 0
    connections: int = 0
    terminal: str = ""
    catchup_ms: list[float] = field(default_factory=list)


async def _reader(api: Api, rid: str, by_header: bool, rng: random.Random) -> ReaderLog:
    log = ReaderLog()
    while not log.terminal:
        t0 = time.perf_counter()
        hold = rng.uniform(*HOLD_S)
        fresh = False

        def on_frames(batch: list[Frame], t0: float = t0, hold: float = hold) -> bool:
            nonlocal fresh
            now = time.perf_counter()
            for f in batch:
                if f.seq <= log.last:
                    log.duplicates += 1
                    continue
                if f.seq > log.last + 1:
                    log.gaps += f.seq - log.last - 1
                log.last = f.seq
                if not fresh:
                    fresh = True
                    log.catchup_ms.append((now - t0) * 1000)
                if f.terminal:
                    log.terminal = f.type
            return bool(log.terminal) or (fresh and now - t0 >= hold)

        log.connections += 1
        if by_header:
            await api.sse(rid, on_frames, last_event_id=log.last if log.last else None)
        else:
            await api.sse(rid, on_frames, after=log.last)
    return log


def _readers_job(args: tuple[str, dict[str, str], str, list[int], float]) -> list[ReaderLog]:
    url, headers, rid, indexes, at = args

    async def main() -> list[ReaderLog]:
        api = Api(url, headers)
        try:
            await asyncio.sleep(max(0.0, at - time.time()))
            return list(
                await asyncio.gather(*(_reader(api, rid, i % 2 == 0, random.Random(i)) for i in indexes))
            )
        finally:
            await api.aclose()

    return run_async(main())


def run(ctx: Context) -> Result:
    deltas = ctx.size(5_000, 1_500)
    readers = ctx.size(100, 20)
    with ctx.server(NAME) as srv:
        return _measure(ctx, srv, deltas, readers)


def _measure(ctx: Context, srv: OnwardServer, deltas: int, readers: int) -> Result:
    headers = srv.auth_headers()

    async def start() -> str:
        api = Api(srv.url, headers)
        try:
            cid = await api.conversation()
            return str((await api.start_run(cid, f"{MATCH} {deltas}x{DELAY_MS}ms", model=PACED_MODEL))["id"])
        finally:
            await api.aclose()

    async def final(rid: str) -> dict[str, object]:
        api = Api(srv.url, headers)
        try:
            return await api.run(rid)
        finally:
            await api.aclose()

    at = start_time(0.0)
    rid = run_async(start())
    t0 = time.monotonic()
    shares = split(range(readers), ctx.pool.processes)
    logs = [log for part in ctx.pool.run(_readers_job, [(srv.url, headers, rid, s, at) for s in shares]) for log in part]
    seconds = time.monotonic() - t0
    run = run_async(final(rid))
    last_seq = int(str(run["last_seq"]))
    dup = sum(log.duplicates for log in logs)
    gap = sum(log.gaps for log in logs)
    short = sum(1 for log in logs if log.last != last_seq)
    connections = sum(log.connections for log in logs)
    catchup = [v for log in logs for v in log.catchup_ms]
    catch = summary(catchup)
    ctx.progress(
        f"{readers} readers, {connections} connections in {seconds:.1f} s: "
        f"{dup} duplicates, {gap} gaps, catch-up p99 {catch['p99']} ms"
    )
    problems = []
    if dup or gap or short:
        problems.append(f"resume: {dup} duplicates, {gap} missing events, {short} readers short of last_seq")
    return Result(
        metrics={
            "resume_dup": dup,
            "resume_gap": gap,
            "resume_catchup_ms_p50": catch["p50"],
            "resume_catchup_ms_p99": catch["p99"],
        },
        samples={"resume_catchup_ms": downsample(catchup)},
        details={
            "deltas": deltas,
            "delta_interval_ms": DELAY_MS,
            "readers": readers,
            "client_processes": len(shares),
            "hold_s": list(HOLD_S),
            "run_last_seq": last_seq,
            "run_status": run["status"],
            "seconds": round(seconds, 2),
            "connections": connections,
            "connections_per_s": round(connections / seconds, 1) if seconds else None,
            "readers_short_of_last_seq": short,
            "catchup_ms": catch,
        },
        problems=problems,
    )
