"""Scenario 7 — deltas durably committed to SQLite per second, with the journal's batching policy.

One run streams `{"deltas": N}` with nobody reading it. The run row's `last_seq` is written in
the same transaction as the events, so polling `GET /api/runs/{id}` every 20 ms traces the
committed seq over time. The key is the run's deltas ÷ (the first poll that saw the run finished
- the server's `ts` of its first event): from the first event recorded to the last one durable,
so it holds however late the first poll lands. An event may carry several deltas (the journal
joins a message's pieces recorded before their batch is taken), so the stored events' text is
counted, a character per delta; the key keeps its name (`commit_events_per_s`). The details add
the slope between polls (in events), the ingest rate from the stored events' `ts` (taken when
each event is recorded, before its commit; if commits kept up, the two agree) and how many seqs
each poll saw commit (the batching)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.client import Api
from bench.harness import Context, Result, cpu_seconds
from bench.pool import run_async
from bench.stats import summary
from onward.testing.server import OnwardServer

NAME = "commit"
TITLE = "Deltas committed to SQLite per second (no readers)"
MATCH = "BENCH-COMMIT"
POLL_S = 0.02


def run(ctx: Context) -> Result:
    deltas = ctx.size(100_000, 10_000)
    ctx.llm.script(MATCH, [{"deltas": deltas}])
    with ctx.server(NAME) as srv:
        return run_async(_measure(ctx, srv, deltas))


async def _measure(ctx: Context, srv: OnwardServer, deltas: int) -> Result:
    api = Api(srv.url, srv.auth_headers())
    try:
        cid = await api.conversation()
        cpu0 = cpu_seconds(srv.pid)
        rid = (await api.start_run(cid, MATCH))["id"]
        trace: list[tuple[float, int]] = []
        while True:
            run = await api.run(rid)
            trace.append((time.time(), int(run["last_seq"])))
            if run["status"] in ("completed", "failed", "cancelled", "interrupted"):
                break
            await asyncio.sleep(POLL_S)
        cpu = cpu_seconds(srv.pid) - cpu0
        stored: list[dict[str, Any]] = []
        while True:
            page = await api.events(rid, after=len(stored))
            if not page:
                break
            stored.extend(page)
    finally:
        await api.aclose()
    t_b, seq_b = trace[-1]
    first_ts = stored[0]["ts"] if stored else t_b
    # the LLM's deltas (a character each) in the stored events, which may join several; others count one
    pieces = [len(e["data"]["text"]) if e["type"] == "message.delta" else 1 for e in stored]
    committed = sum(pieces)
    rate = committed / (t_b - first_ts) if t_b > first_ts else 0.0
    started = next((i for i, (_, seq) in enumerate(trace) if seq > 2), len(trace) - 1)
    t_a, seq_a = trace[started]
    slope = (seq_b - seq_a) / (t_b - t_a) if t_b > t_a else None
    steps = [b[1] - a[1] for a, b in zip(trace[started:], trace[started + 1 :], strict=False)]
    delta_events = [(e["ts"], n) for e, n in zip(stored, pieces, strict=True) if e["type"] == "message.delta"]
    ts = [t for t, _ in delta_events]
    # the deltas recorded from the first delta event's ts to the last one's (whose own pieces came after)
    ingest = (
        sum(n for _, n in delta_events[:-1]) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
    )
    ctx.progress(f"{committed} deltas in {seq_b} events: {rate:,.0f} deltas committed/s (ingest by ts {ingest:,.0f}/s)")
    return Result(
        metrics={"commit_events_per_s": round(rate)},
        details={
            "deltas": deltas,
            "deltas_committed": committed,
            "events": seq_b,
            "stored_events": len(stored),
            "seconds": round(t_b - first_ts, 3),
            "polls": len(trace),
            "slope_between_polls_events_per_s": None if slope is None else round(slope),
            "poll_interval_ms": POLL_S * 1000,
            "committed_per_poll": summary([float(s) for s in steps]),
            "ingest_deltas_per_s_by_ts": round(ingest),
            "server_cpu_s": round(cpu, 2),
            "server_cpu_us_per_delta": round(cpu / committed * 1e6, 1) if committed else None,
        },
        problems=[] if len(stored) == seq_b else [f"commit: {len(stored)} events stored, last_seq {seq_b}"],
    )
