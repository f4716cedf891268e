"""`python -m bench.run [--quick] [--only NAME ...]`: run the scenarios, then write the results.

It starts the scripted LLM (its own process) and the client pool, then each scenario in turn
against fresh `onward serve` processes, printing progress to stderr. A full run writes
bench/results/latest.json, a dated copy, latest.png and the table in docs/performance.md; a quick
run writes latest-quick.json/.png and a dated copy, and leaves the docs alone; a run with --only
writes only its dated copy. The exit status is 1 when a scenario failed or a correctness check
(sequence gaps, duplicates, a process left alive after Stop) did not hold; missed performance
targets are reported, not fatal, since they depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from bench import report
from bench.harness import Context, Llm, Pacer, Progress, Result
from bench.pool import ClientPool
from bench.scenarios import commit, concurrency, first_event, memory, resume, stop, throughput

SCENARIOS: list[ModuleType] = [first_event, throughput, concurrency, stop, resume, memory, commit]


def main(argv: list[str] | None = None) -> int:
    names = [m.NAME for m in SCENARIOS]
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (under a minute)")
    parser.add_argument("--only", action="append", choices=names, metavar="NAME",
                        help=f"run only this scenario (repeatable): {', '.join(names)}")
    parser.add_argument("--client-processes", type=int,
                        default=int(os.environ.get("BENCH_CLIENT_PROCESSES", "2")),
                        help="client processes for fan-out scenarios (default 2, or $BENCH_CLIENT_PROCESSES)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' homes and logs")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], metavar="N,N,...",
                        help="run counts of the concurrency sweep (default 10,50,100,200,500; quick 10,50)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record every server with py-spy into DIR (collapsed stacks; slows the server)")
    args = parser.parse_args(argv)

    selected = [m for m in SCENARIOS if not args.only or m.NAME in args.only]
    started = datetime.now(UTC)
    progress = Progress()
    tmp = Path(tempfile.mkdtemp(prefix="onward-bench-"))
    mode = "quick" if args.quick else "full"
    progress(f"{mode} run of {', '.join(m.NAME for m in selected)}; working in {tmp}")
    load_before = os.getloadavg()

    results: dict[str, Result] = {}
    durations: dict[str, float] = {}
    failures: dict[str, str] = {}
    llm = Llm(tmp / "llm.log")
    pacer = Pacer(tmp / "pacer.log")
    pool = ClientPool(args.client_processes)
    ctx = Context(quick=args.quick, llm=llm, pacer=pacer, tmp=tmp, pool=pool, progress=progress,
                  profile_dir=args.profile, concurrency_sizes=args.sizes)
    try:
        for module in selected:
            progress.scenario = module.NAME
            progress(f"— {module.TITLE}")
            t0 = time.monotonic()
            try:
                results[module.NAME] = module.run(ctx)
            except Exception:
                failures[module.NAME] = traceback.format_exc()
                progress(f"FAILED\n{failures[module.NAME]}")
            durations[module.NAME] = round(time.monotonic() - t0, 1)
            progress(f"done in {durations[module.NAME]:.1f} s")
    finally:
        ctx.close()
        pool.close()
        pacer.stop()
        llm.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    progress.scenario = "bench"
    doc = report.build(
        results=results,
        durations=durations,
        failures=failures,
        mode=mode,
        partial=bool(args.only),
        started=started,
        duration_s=round(time.monotonic() - progress.t0, 1),
        load=(load_before, os.getloadavg()),
        client_processes=args.client_processes,
        server_settings=dict(ctx.settings),
    )
    for path in report.write(doc):
        progress(f"wrote {path}")
    print(report.console_table(doc), file=sys.stderr)
    broken = report.correctness_failures(doc)
    for problem in broken:
        progress(f"CHECK FAILED: {problem}")
    return 1 if failures or broken else 0


if __name__ == "__main__":
    sys.exit(main())
