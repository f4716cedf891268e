"""Scenario 3 — many runs at once: N runs x 200 events 10 ms apart, every run read live.

The LLM streams 200 one-character deltas 10 ms apart, so one run alone needs 2.0 s: the ideal.
The LLM here is `bench.pacer` (model `paced`), not the scripted LLM: the latter spends ~100 µs of
CPU per paced delta, more than 2 cores have at 500 runs; both are calibrated (see below).
For each N (10, 50, 100, 200, 500) the conversations are created first; then the client processes
all begin at one wall-clock instant, each POSTing its share of runs at once and opening every
run's SSE stream as soon as its POST returns. Wall time runs from that instant to the last
terminal event received; the key is wall ÷ 2.0 s. Event latency is receive time - the event's
`ts` (both time.time() on this host) over the `message.delta` events, once per delta of the LLM
that an event carries (the journal joins a message's pieces recorded before their batch is
taken; the event's `ts` is its first piece's, so later pieces count conservatively); it covers commit
batching, publish and delivery. One server serves the whole sweep.

Calibration: the same N streams read straight from the LLM (no Onward in between) show what the
LLM and the client processes alone cost on this machine: `llm_direct_wall_ratio` for the pacer
(every N), `scripted_llm_direct_wall_ratio` for the scripted LLM (the largest N); full mode only.
At the largest N the same measurement runs against `bench.relay` instead of Onward (`relay_floor`):
the least server that plays Onward's part (its wire format and its 20 ms joins, nothing else), so
the row shows what this machine allows any such server, and Onward's distance from it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench import rawhttp
from bench.client import Api, Frame, delta_chars, event_ts
from bench.harness import (
    PACED_MODEL,
    Context,
    Relay,
    Result,
    cpu_seconds,
    cpu_split,
    runqueue_wait_seconds,
)
from bench.pool import run_async, split, start_time
from bench.stats import downsample, summary
from onward.testing.server import OnwardServer

NAME = "concurrency"
TITLE = "N runs x 200 events 10 ms apart, all read live"
MATCH = "BENCH-CONCURRENCY"
EVENTS = 200
DELAY_MS = 10
IDEAL_S = EVENTS * DELAY_MS / 1000
TEXT = f"{MATCH} {EVENTS}x{DELAY_MS}ms"  # the pacer reads the pace from the message
REPEATS_LARGEST = 3  # full mode: the largest N is measured this many times (median)


@dataclass
class RunRecord:
    t_post: float  # time.time() just before the POST
    t_started: float  # the POST returned
    t_terminal: float  # the terminal event arrived
    t_first: float  # the stream's first event arrived (what was recorded before then came as a catch-up)
    events: int  # the LLM's deltas received (a character each; an event may carry several) + other events
    errors: int  # gaps + duplicates
    terminal: str


async def _follow(api: Api, cid: str, text: str, latencies: list[float], live: list[float]) -> RunRecord:
    t_post = time.time()
    rid = (await api.start_run_burst(cid, text, model=PACED_MODEL))["id"]
    t_started = time.time()
    last = events = errors = 0
    t_first = 0.0
    end: list[Frame] = []

    def on_frames(batch: list[Frame]) -> bool:
        nonlocal last, events, errors, t_first
        t_first = t_first or batch[0].received
        for f in batch:
            if f.seq != last + 1:
                errors += 1
            last = max(last, f.seq)
            if f.type == "message.delta":
                # one sample per delta of the LLM (a character each): an event may carry several,
                # and its ts is when the first of them was recorded
                ts = event_ts(f.data)
                weight = delta_chars(f.data)
                events += weight - 1  # counted once below
                latency = (f.received - ts) * 1000
                latencies.extend([latency] * weight)
                if ts > t_first:  # recorded while the reader was already following: delivery alone
                    live.extend([latency] * weight)
        events += len(batch)
        if batch[-1].terminal:
            end.append(batch[-1])
            return True
        return False

    await api.sse(rid, on_frames)
    return RunRecord(t_post, t_started, end[0].received if end else time.time(), t_first or time.time(),
                     events, errors, end[0].type if end else "")


def _runs_job(
    args: tuple[str, dict[str, str], list[str], str, float],
) -> tuple[list[RunRecord], list[float], list[float]]:
    url, headers, cids, text, at = args

    async def main() -> tuple[list[RunRecord], list[float], list[float]]:
        api = Api(url, headers)
        latencies: list[float] = []
        live: list[float] = []
        try:
            await asyncio.sleep(max(0.0, at - time.time()))
            records = await asyncio.gather(*(_follow(api, cid, text, latencies, live) for cid in cids))
            return list(records), latencies, live
        finally:
            await api.aclose()

    return run_async(main())


def _llm_job(args: tuple[str, int, float]) -> list[float]:
    """Read `streams` completions straight from an LLM server; returns when each one ended."""
    base_url, streams, at = args
    body = json.dumps({"model": "scripted", "stream": True, "messages": [{"role": "user", "content": TEXT}]}).encode()

    async def one() -> float:
        def on_body(data: bytes) -> bool:
            return b"[DONE]" in data

        await rawhttp.stream(f"{base_url}/chat/completions", on_body, method="POST", body=body,
                             headers={"Content-Type": "application/json"})
        return time.time()

    async def main() -> list[float]:
        await asyncio.sleep(max(0.0, at - time.time()))
        return list(await asyncio.gather(*(one() for _ in range(streams))))

    return run_async(main())


def run(ctx: Context) -> Result:
    ctx.llm.script(MATCH, [{"text": "x" * EVENTS, "chunk_chars": 1, "delay_ms": DELAY_MS}])
    sizes = ctx.concurrency_sizes or ([10, 50] if ctx.quick else [10, 50, 100, 200, 500])
    with ctx.server(NAME) as srv:
        return _sweep(ctx, srv, sizes)


async def _conversations(url: str, headers: dict[str, str], n: int) -> list[str]:
    api = Api(url, headers)
    gate = asyncio.Semaphore(16)

    async def one() -> str:
        async with gate:
            return await api.conversation()

    try:
        return list(await asyncio.gather(*(one() for _ in range(n))))
    finally:
        await api.aclose()


def _sweep(ctx: Context, srv: OnwardServer, sizes: list[int]) -> Result:
    headers = srv.auth_headers()
    scaling: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {}
    metrics: dict[str, float | int | None] = {}
    problems: list[str] = []
    for n in sizes:
        # The largest N is the noisiest (the machine is saturated): measured REPEATS times, the
        # repetition with the median wall ratio is the row, and the keys are the medians.
        repeats = REPEATS_LARGEST if n == sizes[-1] and not ctx.quick else 1
        measured = [_measure(ctx, srv.url, srv.pid, headers, n, TEXT) for _ in range(repeats)]
        problems += [p for m, _ in measured for p in _problems(m)]
        row, latencies = sorted(measured, key=lambda m: m[0]["wall_ratio"])[len(measured) // 2]
        if repeats > 1:
            row["repeats"] = [
                {"wall_ratio": m["wall_ratio"], "event_latency_ms_p50": m["event_latency_ms"]["p50"],
                 "event_latency_ms_p99": m["event_latency_ms"]["p99"], "server_cpu_s": m["server_cpu_s"]}
                for m, _ in measured
            ]
        if not ctx.quick:  # calibration: the LLM servers read directly, no Onward
            row["llm_direct_wall_ratio"] = _llm_direct(ctx, ctx.pacer.base_url, n)
            if n == sizes[-1]:  # why the pacer: the scripted LLM at the largest N
                row["scripted_llm_direct_wall_ratio"] = _llm_direct(ctx, ctx.llm.base_url, n)
                row["relay_floor"] = _relay_floor(ctx, n)
                problems += [p.replace("concurrency:", "concurrency (bench.relay):", 1) for p in _problems(row["relay_floor"])]
        scaling.append(row)
        samples[f"event_latency_ms_n{n}"] = downsample(latencies)
        metrics[f"concurrency_{n}x{EVENTS}_wall_ratio"] = row["wall_ratio"]
        calibration = "".join(
            f"; {label} read directly {row[key]:.2f}"
            for key, label in (("llm_direct_wall_ratio", "pacer"), ("scripted_llm_direct_wall_ratio", "scripted LLM"))
            if key in row
        )
        ratios = ", ".join(f"{m['wall_ratio']:.2f}" for m, _ in measured)
        spread = f", the median of {repeats}: {ratios}" if repeats > 1 else ""
        lat, live = row["event_latency_ms"], row["event_latency_live_ms"]
        ctx.progress(
            f"N={n}: wall {row['wall_s']:.2f} s (ratio {row['wall_ratio']:.2f}{spread}{calibration}), "
            f"event latency p50 {lat['p50']:.0f} ms p99 {lat['p99']:.0f} ms (live {_ms(live['p50'])} / "
            f"{_ms(live['p99'])} ms; readers joined p99 {_ms(row['joined_ms']['p99'])} ms), server CPU {row['server_cpu_share']:.0%} "
            f"(+{row['server_runqueue_wait_share']:.0%} waiting for a CPU; {row['server_cpu_us_per_event']:.0f} µs per "
            f"delta, {row['server_system_cpu_s'] / max(row['server_cpu_s'], 1e-9):.0%} of it in the kernel), "
            f"clients {row['clients_cpu_share']:.0%}, pacer {row['pacer_cpu_share']:.0%}"
        )
    top = scaling[-1]
    reps = top.get("repeats") or [
        {"event_latency_ms_p50": top["event_latency_ms"]["p50"], "event_latency_ms_p99": top["event_latency_ms"]["p99"]}
    ]
    metrics["event_latency_ms_p50"] = round(statistics.median(r["event_latency_ms_p50"] for r in reps), 3)
    metrics["event_latency_ms_p99"] = round(statistics.median(r["event_latency_ms_p99"] for r in reps), 3)
    details: dict[str, Any] = {
        "events_per_run": EVENTS,
        "delay_ms": DELAY_MS,
        "ideal_s": IDEAL_S,
        "event_latency_at_runs": top["runs"],
        "largest_n_repeats": len(reps),
        "client_processes": ctx.pool.processes,
        "llm": "bench.pacer (lean paced OpenAI-compatible stream); see its docstring",
        "llm_request": TEXT,
        "scaling": scaling,
    }
    if not ctx.quick:
        details["run_lifecycle"], lifecycle_row = _lifecycle(ctx, srv, headers, top)
        problems += _problems(lifecycle_row)
    return Result(metrics=metrics, samples=samples, details=details, problems=problems)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _problems(row: dict[str, Any]) -> list[str]:
    """Correctness, which fails the bench: every run read whole, in order, and completed."""
    out = []
    if row["seq_errors"]:
        out.append(f"concurrency: N={row['runs']}: {row['seq_errors']} sequence gaps or duplicates")
    if row["not_completed"]:
        out.append(f"concurrency: N={row['runs']}: {row['not_completed']} runs did not complete")
    return out


def _measure(
    ctx: Context, url: str, pid: int, headers: dict[str, str], n: int, text: str
) -> tuple[dict[str, Any], list[float]]:
    """Start `n` runs at one instant (each asking the pacer for `text`) on the server at `url`
    (process `pid`), read them all; one row."""
    cids = run_async(_conversations(url, headers, n))
    shares = split(cids, ctx.pool.processes)
    others = {"clients": ctx.pool.pids, "pacer": [ctx.pacer.pid]}
    (user0, sys0), wait0 = cpu_split(pid), runqueue_wait_seconds(pid)
    others0 = {k: sum(cpu_seconds(p) for p in pids) for k, pids in others.items()}
    at = start_time()
    results = ctx.pool.run(_runs_job, [(url, headers, share, text, at) for share in shares])
    user1, sys1 = cpu_split(pid)
    cpu, system = user1 + sys1 - user0 - sys0, sys1 - sys0
    waited = runqueue_wait_seconds(pid) - wait0
    others_cpu = {k: sum(cpu_seconds(p) for p in pids) - others0[k] for k, pids in others.items()}
    records = [r for recs, _, _ in results for r in recs]
    latencies = [v for _, lat, _ in results for v in lat]
    live = [v for _, _, lat in results for v in lat]
    wall = max(r.t_terminal for r in records) - at
    events = sum(r.events for r in records)
    row: dict[str, Any] = {
        "runs": n,
        "wall_s": round(wall, 3),
        "wall_ratio": round(wall / IDEAL_S, 3),
        "event_latency_ms": summary(latencies),
        # the same for events recorded after their reader's first event arrived: delivery alone,
        # without the catch-up of a reader that joined late (its share of the events: live_share)
        "event_latency_live_ms": summary(live),
        "live_share": round(len(live) / max(1, len(latencies)), 3),
        "post_ms": summary([(r.t_started - r.t_post) * 1000 for r in records]),
        # from the POST's start to the stream's first event: how late a reader joined its run
        "joined_ms": summary([(r.t_first - r.t_post) * 1000 for r in records]),
        "run_wall_s": summary([r.t_terminal - r.t_post for r in records]),
        "events": events,
        "seq_errors": sum(r.errors for r in records),
        "not_completed": sum(1 for r in records if r.terminal != "run.completed"),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_share": round(cpu / wall, 2),
        "server_system_cpu_s": round(system, 2),  # the kernel's part: socket reads and writes
        "server_cpu_us_per_event": round(cpu / max(1, events) * 1e6, 1),
        # the rest of the machine's two cores: the load generators' share of the same wall time
        "clients_cpu_share": round(others_cpu["clients"] / wall, 2),
        "pacer_cpu_share": round(others_cpu["pacer"] / wall, 2),
        "server_runqueue_wait_share": round(waited / wall, 2),
    }
    return row, latencies


def _lifecycle(
    ctx: Context, srv: OnwardServer, headers: dict[str, str], top: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a run costs the server apart from its events: as many runs as the largest N, started
    the same way, whose LLM answers with one delta. Splits the largest N's server CPU into the
    runs' lifecycles (two HTTP requests, an LLM connection, the claim, history, the closing
    commits) and the per-event path."""
    n = top["runs"]
    row, _ = _measure(ctx, srv.url, srv.pid, headers, n, f"{MATCH} 1x1ms")
    per_run_ms = row["server_cpu_s"] / n * 1000
    lifecycle_s = per_run_ms * top["runs"] / 1000
    out = {
        "runs": n,
        "events_per_run": row["events"] / n,
        "wall_s": row["wall_s"],
        "server_cpu_ms_per_run": round(per_run_ms, 2),
        "server_system_cpu_ms_per_run": round(row["server_system_cpu_s"] / n * 1000, 2),
        # of the largest N's server CPU: how much the lifecycles explain, and what is left per event
        "share_of_largest_n_cpu": round(lifecycle_s / max(top["server_cpu_s"], 1e-9), 2),
        "server_cpu_us_per_event_net": round(
            max(0.0, top["server_cpu_s"] - lifecycle_s) / max(1, top["events"] - row["events"]) * 1e6, 1
        ),
    }
    ctx.progress(
        f"run lifecycle: {n} runs of one delta, {per_run_ms:.2f} ms of server CPU per run "
        f"({out['server_system_cpu_ms_per_run']:.2f} in the kernel): {out['share_of_largest_n_cpu']:.0%} of the "
        f"server CPU at N={top['runs']}, leaving {out['server_cpu_us_per_event_net']:.0f} µs per delta"
    )
    return out, row


def _relay_floor(ctx: Context, n: int) -> dict[str, Any]:
    """The largest N against `bench.relay` instead of Onward (calibration): the same clients, LLM
    and measurement; the row keeps the keys that compare."""
    relay = Relay(ctx.tmp / "relay.log", ctx.pacer.base_url)
    try:
        row, _ = _measure(ctx, relay.url, relay.pid, {}, n, TEXT)
    finally:
        relay.stop()
    out = {key: row[key] for key in (
        "runs", "wall_ratio", "event_latency_ms", "event_latency_live_ms", "joined_ms", "seq_errors", "not_completed",
        "server_cpu_s", "server_cpu_share", "server_system_cpu_s", "server_cpu_us_per_event",
        "server_runqueue_wait_share", "clients_cpu_share", "pacer_cpu_share",
    )}
    lat = row["event_latency_ms"]
    ctx.progress(
        f"N={n} against bench.relay (the floor: no database, no framework): ratio {row['wall_ratio']:.2f}, "
        f"event latency p50 {lat['p50']:.0f} ms p99 {lat['p99']:.0f} ms, relay CPU {row['server_cpu_share']:.0%} "
        f"({row['server_cpu_us_per_event']:.0f} µs per delta), clients {row['clients_cpu_share']:.0%}, "
        f"pacer {row['pacer_cpu_share']:.0%}"
    )
    return out


def _llm_direct(ctx: Context, base_url: str, n: int) -> float:
    """Wall ratio of `n` streams read straight from an LLM server, no Onward (calibration)."""
    shares = split(range(n), ctx.pool.processes)
    at = start_time()
    ends = [t for part in ctx.pool.run(_llm_job, [(base_url, len(s), at) for s in shares]) for t in part]
    return round((max(ends) - at) / IDEAL_S, 3)
