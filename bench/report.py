"""Results → bench/results/*.json, a PNG of latency distributions and scaling, and the table in
docs/performance.md (between `<!-- bench:table:start -->` and `<!-- bench:table:end -->`).

Everything the plot and the table need is in the JSON (distributions are stored as at most 1,000
order statistics), so `python -m bench.report [RESULT.json]` redraws both from a stored result.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import Result

SCHEMA = 1
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
TABLE_START, TABLE_END = "<!-- bench:table:start -->", "<!-- bench:table:end -->"


@dataclass(frozen=True)
class Target:
    key: str
    op: str  # "<", "<=", ">=", "=="
    value: float
    unit: str = ""

    def check(self, measured: float | int | None) -> bool | None:
        if measured is None:
            return None
        return {
            "<": measured < self.value,
            "<=": measured <= self.value,
            ">=": measured >= self.value,
            "==": measured == self.value,
        }[self.op]

    def text(self) -> str:
        op = {"<=": "≤", ">=": "≥", "==": "="}.get(self.op, self.op)
        return f"{op} {_num(self.value)}{(' ' + self.unit) if self.unit else ''}"


# The targets for a full run on a 2-core machine.
TARGETS = [
    Target("first_event_ms_p50", "<", 20, "ms"),
    Target("events_per_s_one_client", ">=", 20_000, "/s"),
    Target("concurrency_50x200_wall_ratio", "<=", 1.3),
    Target("concurrency_500x200_wall_ratio", "<=", 1.5),
    Target("event_latency_ms_p99", "<=", 50, "ms"),
    Target("stop_ms_p99", "<", 100, "ms"),
    Target("stop_processes_alive", "==", 0),
    Target("resume_dup", "==", 0),
    Target("resume_gap", "==", 0),
    Target("rss_kb_per_active_run", "<=", 200, "KB"),
]
TARGET_BY_KEY = {t.key: t for t in TARGETS}

# Row order and labels of the table: (scenario, key, unit).
ROWS: list[tuple[str, str, str]] = [
    ("1 · first event", "first_event_ms_p50", "ms"),
    ("1 · first event", "first_event_ms_p99", "ms"),
    ("2 · throughput", "events_per_s_one_client", "/s"),
    ("2 · throughput", "events_per_s_ten_clients", "/s"),
    ("3 · concurrency", "concurrency_10x200_wall_ratio", "x"),
    ("3 · concurrency", "concurrency_50x200_wall_ratio", "x"),
    ("3 · concurrency", "concurrency_100x200_wall_ratio", "x"),
    ("3 · concurrency", "concurrency_200x200_wall_ratio", "x"),
    ("3 · concurrency", "concurrency_500x200_wall_ratio", "x"),
    ("3 · concurrency", "event_latency_ms_p50", "ms"),
    ("3 · concurrency", "event_latency_ms_p99", "ms"),
    ("4 · stop", "stop_ms_p50", "ms"),
    ("4 · stop", "stop_ms_p99", "ms"),
    ("4 · stop", "stop_processes_alive", ""),
    ("5 · resume", "resume_dup", ""),
    ("5 · resume", "resume_gap", ""),
    ("5 · resume", "resume_catchup_ms_p99", "ms"),
    ("6 · memory", "rss_kb_per_active_run", "KB"),
    ("6 · memory", "rss_kb_per_idle_conversation", "KB"),
    ("7 · commit", "commit_events_per_s", "/s"),
]


# building ------------------------------------------------------------------------------------


def build(
    *,
    results: dict[str, Result],
    durations: dict[str, float],
    failures: dict[str, str],
    mode: str,
    partial: bool,
    started: datetime,
    duration_s: float,
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    client_processes: int,
    server_settings: dict[str, object],
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    for res in results.values():
        metrics.update(res.metrics)
        samples.update(res.samples)
    return {
        "schema": SCHEMA,
        "mode": mode,
        "quick": mode == "quick",
        "partial": partial,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": duration_s,
        "machine": machine(),
        "settings": {
            "server": {**server_settings, "note": "every other setting is Onward's default"},
            "client_processes": client_processes,
            "load_average_before": [round(x, 2) for x in load[0]],
            "load_average_after": [round(x, 2) for x in load[1]],
        },
        "metrics": metrics,
        "targets": {
            t.key: {"target": t.text(), "measured": metrics.get(t.key), "pass": t.check(metrics.get(t.key))}
            for t in TARGETS
        },
        "problems": [p for res in results.values() for p in res.problems],
        "failures": failures,
        "scenarios": {
            name: {"duration_s": durations.get(name), "details": res.details} for name, res in results.items()
        },
        "samples": samples,
    }


def correctness_failures(doc: dict[str, Any]) -> list[str]:
    return list(doc.get("problems", []))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
    except OSError:
        pass
    packages: dict[str, str | None] = {}
    for name in ("uvicorn", "fastapi", "starlette", "sqlalchemy", "h11", "httptools", "uvloop",
                 "httpx", "openai"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "onward": _onward_version(),
        "git_commit": _git("rev-parse", "--short=12", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "packages": packages,
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _onward_version() -> str:
    try:
        return importlib.metadata.version("onward")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


# writing -------------------------------------------------------------------------------------


def write(doc: dict[str, Any]) -> list[Path]:
    """Write the result files this kind of run owns; returns their paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(doc["started_at"]).strftime("%Y-%m-%dT%H%M%S")
    text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    written: list[Path] = []
    if doc["partial"]:
        path = RESULTS / f"{stamp}-partial{'-quick' if doc['quick'] else ''}.json"
        path.write_text(text)
        return [path]
    suffix = "-quick" if doc["quick"] else ""
    for path in (RESULTS / f"latest{suffix}.json", RESULTS / f"{stamp}{suffix}.json"):
        path.write_text(text)
        written.append(path)
    png = RESULTS / f"latest{suffix}.png"
    if plot(doc, png):
        written.append(png)
    if not doc["quick"]:
        update_doc(doc)
        written.append(DOC)
    return written


def table(doc: dict[str, Any]) -> str:
    """The markdown table of keys, targets, measured values and pass/miss."""
    metrics = doc["metrics"]
    lines = ["| scenario | key | target | measured | |", "|---|---|---|---|---|"]
    for scenario, key, unit in ROWS:
        value = metrics.get(key)
        target = TARGET_BY_KEY.get(key)
        verdict = target.check(value) if target else None
        mark = "" if verdict is None else ("pass" if verdict else "**miss**")
        shown = "—" if value is None else f"{_num(value)}{(' ' + unit) if unit and unit != 'x' else ''}"
        lines.append(f"| {scenario} | `{key}` | {target.text() if target else ''} | {shown} | {mark} |")
    return "\n".join(lines)


def describe_machine(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    commit = m["git_commit"] or "unknown"
    if m.get("git_dirty"):
        commit += " (with uncommitted changes)"
    load = doc["settings"]["load_average_before"]
    return (
        f"Measured {doc['started_at']} ({doc['mode']} mode, {doc['duration_s']:.0f} s) on {m['cpu']}, "
        f"{m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']}, Linux {m['kernel']}; {m['python']}; "
        f"SQLite {m['sqlite']}; Onward {m['onward']} at commit {commit}. "
        f"Load average before the run: {load[0]}. Client processes: {doc['settings']['client_processes']}."
    )


def describe_floor(doc: dict[str, Any]) -> str:
    """Onward at the largest N beside `bench.relay` (the floor) at the same N: '' without one."""
    scaling = doc.get("scenarios", {}).get("concurrency", {}).get("details", {}).get("scaling", [])
    top = scaling[-1] if scaling else {}
    floor = top.get("relay_floor")
    if not floor:
        return ""
    return (
        f"The floor at N = {top['runs']} (`bench.relay`: Onward's wire format and 20 ms joins, no database, "
        f"no framework; same clients, LLM and machine): ratio {floor['wall_ratio']:.2f}, event latency p50 "
        f"{floor['event_latency_ms']['p50']:.0f} ms and p99 {floor['event_latency_ms']['p99']:.0f} ms, "
        f"{floor['server_cpu_us_per_event']:.0f} µs of CPU per delta; Onward: ratio {top['wall_ratio']:.2f}, "
        f"p50 {top['event_latency_ms']['p50']:.0f} ms and p99 {top['event_latency_ms']['p99']:.0f} ms, "
        f"{top['server_cpu_us_per_event']:.0f} µs per delta{_repeats(top)}.\n\n"
    )


def _repeats(top: dict[str, Any]) -> str:
    """The repetitions at the largest N, whose medians are the table's keys (the row is one of them)."""
    reps = top.get("repeats") or []
    if len(reps) < 2:
        return ""
    ratios = ", ".join(f"{r['wall_ratio']:.2f}" for r in reps)
    p99s = ", ".join(f"{r['event_latency_ms_p99']:.0f}" for r in reps)
    return (
        f" (the repetition with the median ratio; the {len(reps)} repetitions: ratio {ratios}, "
        f"event latency p99 {p99s} ms)"
    )


def update_doc(doc: dict[str, Any], path: Path = DOC) -> None:
    """Replace the text between the table markers of docs/performance.md."""
    text = path.read_text()
    block = f"{TABLE_START}\n{table(doc)}\n\n{describe_floor(doc)}{describe_machine(doc)}\n{TABLE_END}"
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"{path} has no {TABLE_START} … {TABLE_END} block")
    path.write_text(pattern.sub(lambda _: block, text, count=1))


def console_table(doc: dict[str, Any]) -> str:
    metrics = doc["metrics"]
    out = [f"\n{doc['mode']} run, {doc['duration_s']:.0f} s"]
    for _scenario, key, _unit in ROWS:
        if key not in metrics:
            continue
        target = TARGET_BY_KEY.get(key)
        verdict = target.check(metrics[key]) if target else None
        mark = "" if verdict is None else ("  pass" if verdict else "  MISS")
        out.append(f"  {key:34} {_num(metrics[key]):>12}  {target.text() if target else '':12}{mark}")
    for key in sorted(set(metrics) - {k for _, k, _ in ROWS}):
        out.append(f"  {key:34} {_num(metrics[key]):>12}")
    return "\n".join(out)


def _num(value: float | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{int(value):,}"


# plotting ------------------------------------------------------------------------------------


def plot(doc: dict[str, Any], path: Path) -> bool:
    """Latency CDFs (first event, stop, event latency by N, resume catch-up) and scaling curves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'); no plot", file=sys.stderr)
        return False
    samples: dict[str, list[float]] = doc.get("samples", {})
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    title = f"Onward benchmarks — {doc['mode']} run {doc['started_at']} — {describe_short(doc)}"
    fig.suptitle(title, fontsize=11)

    def cdf(ax: Any, key: str, label: str) -> None:
        values = samples.get(key)
        if values:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, ys, label=label, drawstyle="steps-post")

    ax = axes[0][0]
    cdf(ax, "first_event_ms", "create run → first SSE event")
    _decorate(ax, "First event latency (CDF)", "ms", target=20, target_label="target p50 < 20 ms")
    _log_x(ax)

    ax = axes[0][1]
    cdf(ax, "stop_ms", "cancel POST → run.cancelled")
    _decorate(ax, "Stop latency (CDF)", "ms", target=100, target_label="target p99 < 100 ms")
    _log_x(ax)

    ax = axes[0][2]
    for key in sorted((k for k in samples if k.startswith("event_latency_ms_n")), key=lambda k: int(k[18:])):
        cdf(ax, key, f"N = {key[18:]} runs")
    _decorate(ax, "Event latency, receive - ts (CDF)", "ms", target=50, target_label="target p99 ≤ 50 ms")
    _log_x(ax)

    ax = axes[1][0]
    scaling = doc.get("scenarios", {}).get("concurrency", {}).get("details", {}).get("scaling", [])
    if scaling:
        ns = [row["runs"] for row in scaling]
        ax.plot(ns, [row["wall_ratio"] for row in scaling], "o-", label="Onward: wall ÷ 2.0 s")
        llm = [row.get("llm_direct_wall_ratio") for row in scaling]
        if all(v is not None for v in llm):
            ax.plot(ns, llm, "s--", label="pacer LLM read directly (calibration)")
        scripted = [(row["runs"], row["scripted_llm_direct_wall_ratio"]) for row in scaling
                    if row.get("scripted_llm_direct_wall_ratio") is not None]
        if scripted:
            ax.plot([n for n, _ in scripted], [v for _, v in scripted], "kD", label="scripted LLM read directly")
        floor = [(row["runs"], row["relay_floor"]) for row in scaling if row.get("relay_floor")]
        if floor:
            ax.plot([n for n, _ in floor], [f["wall_ratio"] for _, f in floor], "g*", markersize=11,
                    label="bench.relay, the floor (calibration)")
        ax.plot([50, 500], [1.3, 1.5], "rx", markersize=10, label="targets (50: 1.3, 500: 1.5)")
        _log_x(ax)
        ax2 = ax.twinx()
        ax2.plot(ns, [row["event_latency_ms"]["p99"] for row in scaling], "^:", color="tab:green",
                 label="event latency p99 (ms)")
        if floor:
            ax2.plot([n for n, _ in floor], [f["event_latency_ms"]["p99"] for _, f in floor], "g^",
                     markerfacecolor="none", label="the floor's latency p99 (ms)")
        ax2.set_ylabel("event latency p99 (ms)", color="tab:green")
    ax.set_title("Scaling: N runs x 200 events 10 ms apart")
    ax.set_xlabel("concurrent runs N")
    ax.set_ylabel("wall-time ratio")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[1][1]
    cdf(ax, "resume_catchup_ms", "reconnect → first new event")
    _decorate(ax, "Resume catch-up (CDF)", "ms")
    _log_x(ax)

    ax = axes[1][2]
    m = doc["metrics"]
    bars = [
        ("1 reader", m.get("events_per_s_one_client")),
        ("10 readers\n(total)", m.get("events_per_s_ten_clients")),
        ("commit", m.get("commit_events_per_s")),
    ]
    shown = [(label, v) for label, v in bars if v is not None]
    if shown:
        drawn = ax.bar([b[0] for b in shown], [b[1] for b in shown],
                       color=["tab:blue", "tab:orange", "tab:gray"][: len(shown)])
        ax.bar_label(drawn, labels=[f"{v:,.0f}" for _, v in shown], fontsize=8)
        ax.axhline(20_000, color="red", linestyle="--", linewidth=1, label="target 1 reader ≥ 20,000/s")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Events per second")
    ax.grid(True, axis="y", alpha=0.3)

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _log_x(ax: Any) -> None:
    """Log x axis labelled at 1, 2 and 5 times 10^k, so that a range within one decade still has labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    wide = lo > 0 and hi / lo > 300  # beyond ~2.5 decades, 1-2-5 labels would collide
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def describe_short(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return f"{m['cpu']}, {m['cores']} cores, {m['python']}, commit {m['git_commit'] or '?'}"


def _decorate(ax: Any, title: str, xlabel: str, target: float | None = None, target_label: str = "") -> None:
    if target is not None:
        ax.axvline(target, color="red", linestyle="--", linewidth=1, label=target_label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction ≤ x")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report",
                                     description="Redraw the plot (and the docs table) from a result file.")
    parser.add_argument("result", nargs="?", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--png", type=Path, help="where to write the plot (default: next to the result)")
    parser.add_argument("--doc", action="store_true", help="also regenerate the table in docs/performance.md")
    args = parser.parse_args(argv)
    doc = json.loads(args.result.read_text())
    png = args.png or args.result.with_suffix(".png")
    if plot(doc, png):
        print(f"wrote {png}")
    if args.doc:
        update_doc(doc)
        print(f"updated {DOC}")
    print(console_table(doc))


if __name__ == "__main__":
    main()
