"""Scenario 1 — time to first event: from just before `POST …/runs` to the first SSE event.

The LLM answers at once ("ok"). Runs go one after another on one keep-alive client, each in a
conversation created beforehand: the clock starts before the POST, the SSE stream is opened as
soon as the POST returns (the run id comes from it) and the clock stops when the first event
frame arrives — usually `run.started`, replayed from the store or live, whichever wins. The stream
is then read to its terminal event, so runs never overlap. A few warm-up runs are not counted.
The stream is a new connection (as a browser's EventSource opens); the POST reuses a kept-alive one.
"""

from __future__ import annotations

import time
from collections import Counter

from bench.client import Api, Frame
from bench.harness import Context, Result
from bench.pool import run_async
from bench.stats import downsample, summary
from onward.testing.server import OnwardServer

NAME = "first_event"
TITLE = "Create a run → first event at an SSE reader"
MATCH = "BENCH-FIRST-EVENT"
WARMUP = 5


def run(ctx: Context) -> Result:
    ctx.llm.script(MATCH, [{"text": "ok"}])
    n = ctx.size(200, 20)
    with ctx.server(NAME) as srv:
        return run_async(_measure(ctx, srv, n))


async def _measure(ctx: Context, srv: OnwardServer, n: int) -> Result:
    api = Api(srv.url, srv.auth_headers())
    try:
        cids = [await api.conversation() for _ in range(n + WARMUP)]
        first_ms: list[float] = []
        post_ms: list[float] = []
        total_ms: list[float] = []
        first_types: Counter[str] = Counter()
        for i, cid in enumerate(cids):
            seen: list[tuple[float, str]] = []

            def on_frames(frames: list[Frame], seen: list[tuple[float, str]] = seen) -> bool:
                if not seen:
                    seen.append((time.perf_counter(), frames[0].type))
                return False  # read on to the terminal event, so runs never overlap

            t0 = time.perf_counter()
            run = await api.start_run(cid, f"{MATCH} {i}")
            t_post = time.perf_counter()
            await api.sse(run["id"], on_frames)
            t_end = time.perf_counter()
            t_first, first_type = seen[0] if seen else (None, "")
            if i < WARMUP or t_first is None:
                continue
            first_ms.append((t_first - t0) * 1000)
            post_ms.append((t_post - t0) * 1000)
            total_ms.append((t_end - t0) * 1000)
            first_types[first_type] += 1
            if (i - WARMUP + 1) % 50 == 0:
                ctx.progress(f"{i - WARMUP + 1}/{n} runs")
    finally:
        await api.aclose()
    first = summary(first_ms)
    return Result(
        metrics={"first_event_ms_p50": first["p50"], "first_event_ms_p99": first["p99"]},
        samples={"first_event_ms": downsample(first_ms)},
        details={
            "runs": n,
            "warmup_runs": WARMUP,
            "llm_turn": {"text": "ok"},
            "first_event_ms": first,
            "post_ms": summary(post_ms),
            "run_to_terminal_ms": summary(total_ms),
            "first_event_types": dict(first_types),
        },
    )
