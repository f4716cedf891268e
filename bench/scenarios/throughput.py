"""Scenario 2 — deltas per second to SSE readers, for one run emitting 100,000 tiny deltas.

The LLM streams `{"deltas": N}` (one-character deltas, as fast as it can). Phase 1: one reader
(in this process) opens the SSE stream right after the POST and follows the run to its terminal
event; rate = the LLM's deltas received ÷ (last receive - the server's `ts` of the first event,
same host clock). An event may carry several deltas (the journal joins the pieces of a message
recorded before their batch is taken), so deltas are counted from the text, a character each,
and every other event counts one; the keys keep their names (`events_per_s_…`), and the
details give the events (frames) as well.
Phase 2: a new run read by ten readers spread over the client processes; the key is the total
delivered (events summed over readers ÷ the same span, to the last reader's end); per-reader
rates are in the details. Each reader checks that seqs come 1, 2, 3, … with no gap or duplicate.

A reader can only be as fast as the server produces, so the details also give the server's own
production rate (from the events' `ts`), the reader's lag behind production at the end, the
server's CPU per event, and two client ceilings: the time to replay the finished run (store →
reader; its deltas are joined into a few dozen events, so a rate would say little) and this parser
on bytes already in memory.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench import rawhttp
from bench.client import Api, Frame, SseParser, delta_chars, event_ts
from bench.harness import Context, Result, cpu_seconds, runqueue_wait_seconds
from bench.pool import run_async, split, start_time
from onward.testing.server import OnwardServer

NAME = "throughput"
TITLE = "One run of tiny deltas → SSE readers"
MATCH = "BENCH-THROUGHPUT"


@dataclass
class ReaderStats:
    events: int = 0  # frames
    deltas: int = 0  # the LLM's deltas they carried (a character each) + the other events
    errors: int = 0  # gaps + duplicates
    t_first: float = 0.0  # receive times (time.time())
    t_last: float = 0.0
    ts_first: float = 0.0  # server ts of the first and last events received
    ts_last: float = 0.0
    terminal: str = ""

    @property
    def rate(self) -> float:
        """Deltas ÷ (last receive - the server's ts of the first event): from the run's first
        event being recorded to this reader holding all of them. (Not from this reader's first
        receive: a reader that connects late gets a fast replay burst, which would flatter it.)"""
        span = self.t_last - self.ts_first
        return self.deltas / span if span > 0 else 0.0

    @property
    def receive_span(self) -> float:
        """Seconds from the first receive to the last: for a replay of a finished run."""
        return self.t_last - self.t_first


async def read_run(api: Api, rid: str) -> ReaderStats:
    """Follow `rid` from the start to its terminal event, counting and checking seqs."""
    st = ReaderStats()
    last = 0

    def on_frames(batch: list[Frame]) -> bool:
        nonlocal last
        if st.events == 0:
            st.t_first, st.ts_first = batch[0].received, event_ts(batch[0].data)
        if batch[0].seq == last + 1 and batch[-1].seq == last + len(batch):
            last = batch[-1].seq  # the usual case: contiguous, checked without a loop
        else:
            for f in batch:
                if f.seq != last + 1:
                    st.errors += 1
                last = max(last, f.seq)
        st.events += len(batch)
        st.deltas += sum(delta_chars(f.data) if f.type == "message.delta" else 1 for f in batch)
        if batch[-1].terminal:
            st.t_last, st.ts_last, st.terminal = batch[-1].received, event_ts(batch[-1].data), batch[-1].type
            return True
        return False

    await api.sse(rid, on_frames)
    return st


def _readers_job(args: tuple[str, dict[str, str], str, int, float]) -> list[ReaderStats]:
    url, headers, rid, readers, at = args

    async def main() -> list[ReaderStats]:
        api = Api(url, headers)
        try:
            await asyncio.sleep(max(0.0, at - time.time()))
            return list(await asyncio.gather(*(read_run(api, rid) for _ in range(readers))))
        finally:
            await api.aclose()

    return run_async(main())


def run(ctx: Context) -> Result:
    deltas = ctx.size(100_000, 10_000)
    ctx.llm.script(MATCH, [{"deltas": deltas}])
    with ctx.server(NAME) as srv:
        return _measure(ctx, srv, deltas)


def _measure(ctx: Context, srv: OnwardServer, deltas: int) -> Result:
    headers = srv.auth_headers()
    waits: list[float] = []

    async def one_reader() -> tuple[ReaderStats, float, ReaderStats, str, str]:
        api = Api(srv.url, headers)
        try:
            cids = [await api.conversation() for _ in range(2)]
            cpu0, wait0 = cpu_seconds(srv.pid), runqueue_wait_seconds(srv.pid)
            rid = (await api.start_run(cids[0], MATCH))["id"]
            st = await read_run(api, rid)
            cpu = cpu_seconds(srv.pid) - cpu0
            waits.append(runqueue_wait_seconds(srv.pid) - wait0)
            ctx.progress(f"1 reader: {st.deltas} deltas in {st.events} events at {st.rate:,.0f} deltas/s")
            replay = await read_run(api, rid)  # the finished run again, all from the store
            # joined deltas make the stored log a few dozen events: a time, not a rate, says more
            ctx.progress(f"replay of the finished run: {replay.deltas} deltas in {replay.events} events, "
                         f"{replay.receive_span * 1000:.1f} ms from the first to the last")
            return st, cpu, replay, rid, cids[1]
        finally:
            await api.aclose()

    single, cpu, replay, rid, cid2 = run_async(one_reader())
    parse_rate = _parser_ceiling(ctx, srv.url, headers, rid)

    async def start_second() -> str:
        api = Api(srv.url, headers)
        try:
            return str((await api.start_run(cid2, MATCH))["id"])
        finally:
            await api.aclose()

    readers = 10
    at = start_time(0.0)
    rid2 = run_async(start_second())
    shares = split(range(readers), ctx.pool.processes)
    stats = [s for part in ctx.pool.run(_readers_job, [(srv.url, headers, rid2, len(p), at) for p in shares]) for s in part]
    total = sum(s.deltas for s in stats)
    span = max(s.t_last for s in stats) - min(s.ts_first for s in stats)
    aggregate = total / span if span > 0 else 0.0
    ctx.progress(f"10 readers: {aggregate:,.0f} deltas/s in total, slowest reader {min(s.rate for s in stats):,.0f}/s")

    production = single.deltas / (single.ts_last - single.ts_first) if single.ts_last > single.ts_first else 0.0
    return Result(
        metrics={
            "events_per_s_one_client": round(single.rate),
            "events_per_s_ten_clients": round(aggregate),
        },
        details={
            "deltas": deltas,
            "llm_turn": {"deltas": deltas},
            "one_client": {
                "events": single.events,
                "deltas": single.deltas,
                "seconds": round(single.t_last - single.ts_first, 3),
                "first_event_reached_reader_ms": round((single.t_first - single.ts_first) * 1000, 1),
                "deltas_per_s": round(single.rate),
                "server_production_deltas_per_s": round(production),
                "reader_lag_at_end_ms": round((single.t_last - single.ts_last) * 1000, 1),
                "server_cpu_s": round(cpu, 2),
                "server_cpu_us_per_delta": round(cpu / single.deltas * 1e6, 1) if single.deltas else None,
                "server_runqueue_wait_s": round(waits[0], 2),
                "seq_errors": single.errors,
            },
            "ten_clients": {
                "readers": readers,
                "client_processes": len(shares),
                "deltas_total": total,
                "events_total": sum(s.events for s in stats),
                "deltas_per_s_total": round(aggregate),
                "deltas_per_s_per_reader_min": round(min(s.rate for s in stats)),
                "deltas_per_s_per_reader_max": round(max(s.rate for s in stats)),
                "seq_errors": sum(s.errors for s in stats),
                "all_terminal": all(s.terminal for s in stats),
            },
            "ceilings": {
                "replay_events": replay.events,
                "replay_ms": round(replay.receive_span * 1000, 2),
                "client_parser_events_per_s": round(parse_rate),
            },
        },
    )


def _parser_ceiling(ctx: Context, url: str, headers: dict[str, str], rid: str) -> float:
    """Events per second this reader's parser handles on bytes already received (no I/O)."""
    chunks: list[bytes] = []

    def keep(data: bytes) -> bool:
        chunks.append(data)
        return False

    run_async(rawhttp.stream(f"{url}/api/runs/{rid}/stream", keep, headers=headers))
    parser = SseParser()
    t0 = time.perf_counter()
    n = 0
    for chunk in chunks:
        n += len(parser.feed(chunk, 0.0))
    return n / (time.perf_counter() - t0)
