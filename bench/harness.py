"""What every scenario stands on: the LLM doubles in processes of their own, `onward serve`
processes, the client process pool, progress lines, and reading a process's memory and CPU.

The parties never share a process: the server is `OnwardServer` (a real `onward serve` subprocess,
embedded mode), the LLMs are `python -m onward.testing.fake_llm` (the default model) and
`python -m bench.pacer` (model `paced`), and clients run in this process or in the spawned client
pool (`bench.pool`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.pool import ClientPool
from onward.testing.server import OnwardServer

# Settings every bench server gets; a scenario may add its own. Everything else is Onward's default.
SERVER_SETTINGS: dict[str, object] = {"max_active_runs": 2000}


class LlmProcess:
    """A test double in its own process (an LLM, or the relay); it prints its base URL (…/v1 for
    an LLM) on its first line."""

    def __init__(self, module: str, log_path: Path, *args: str) -> None:
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", "0", *args], stdout=subprocess.PIPE, stderr=self._log
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"{module} did not start (printed {line!r}); see {log_path}")
        self.base_url = line
        self.url = line.rsplit("/v1", 1)[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class Llm(LlmProcess):
    """The scripted LLM server (`python -m onward.testing.fake_llm`)."""

    def __init__(self, log_path: Path) -> None:
        super().__init__("onward.testing.fake_llm", log_path)

    def script(self, match: str, turns: list[dict[str, Any]]) -> None:
        """Answer every conversation whose last user message matches `match` with `turns`."""
        r = httpx.post(f"{self.url}/_scripts", json={"match": match, "turns": turns}, timeout=10)
        r.raise_for_status()


class Pacer(LlmProcess):
    """The lean paced LLM (`python -m bench.pacer`), model `paced`: concurrency and resume."""

    def __init__(self, log_path: Path) -> None:
        super().__init__("bench.pacer", log_path)


class Progress:
    """Progress lines on stderr, stamped with the time since the bench began."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.scenario = "bench"

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {self.scenario}: {message}", file=sys.stderr, flush=True)


class Relay(LlmProcess):
    """The floor of the concurrency scenario (`python -m bench.relay`): Onward's part played with
    nothing but the relay of deltas, for calibration."""

    def __init__(self, log_path: Path, llm_base_url: str) -> None:
        super().__init__("bench.relay", log_path, "--llm", llm_base_url)


PACED_MODEL = "paced"  # the model name under which every bench server knows the pacer


@dataclass
class Context:
    """Handed to every scenario: sizes by mode, the LLMs, servers, the client pool, progress.

    Every server's default model is the scripted LLM, and model `paced` is the pacer (named in
    an onward.toml the bench writes). In quick mode scenarios share one server unless they ask
    for a fresh one (`fresh=True`, a given `home`, or settings of their own); in full mode each
    scenario gets a server of its own, so no scenario inherits another's database or memory.
    """

    quick: bool
    llm: Llm
    pacer: Pacer
    tmp: Path
    pool: ClientPool
    progress: Progress
    settings: dict[str, object] = field(default_factory=lambda: dict(SERVER_SETTINGS))
    profile_dir: Path | None = None  # py-spy every server into this directory (--profile)
    concurrency_sizes: list[int] | None = None  # --sizes: the concurrency sweep's run counts
    _homes: int = 0
    _shared: OnwardServer | None = None
    _spies: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @contextlib.contextmanager
    def server(
        self, name: str, home: Path | None = None, fresh: bool = False, **settings: object
    ) -> Iterator[OnwardServer]:
        """A running `onward serve`: its own empty home unless `home` is given; stopped on exit
        unless it is the shared one (quick mode)."""
        if self.quick and not fresh and home is None and not settings:
            if self._shared is None:
                self._shared = self.start_server("shared")
            yield self._shared
            return
        srv = self.start_server(name, home, **settings)
        try:
            yield srv
        finally:
            self.stop_server(srv)

    def close(self) -> None:
        if self._shared is not None:
            self.stop_server(self._shared)
            self._shared = None

    def start_server(self, name: str, home: Path | None = None, **settings: object) -> OnwardServer:
        """Start a server of its own (the caller stops it with `stop_server`); thread-safe."""
        t0 = time.monotonic()
        if home is None:
            with self._lock:
                self._homes += 1
                home = self.tmp / f"{self._homes:02d}-{name}"
        config = self.tmp / "onward.toml"
        if not config.exists():
            config.write_text(
                f'[models.{PACED_MODEL}]\nbase_url = "{self.pacer.base_url}"\nmodel = "paced"\napi_key = "x"\n'
            )
        srv = OnwardServer(home, self.llm.base_url, config_file=config, **{**self.settings, **settings})
        srv.start(timeout=60)
        srv.auth_headers()  # log in now, not inside a measurement
        self.progress(f"server {home.name} (pid {srv.pid}) ready in {time.monotonic() - t0:.1f} s")
        if self.profile_dir:
            try:
                self._spies[srv.pid] = self._profile(srv, home.name)
            except BaseException:
                srv.stop()  # never leave a server running behind a failed start
                raise
        return srv

    def stop_server(self, srv: OnwardServer) -> None:
        pid = srv.pid
        srv.stop()
        spy = self._spies.pop(pid, None)
        if spy is not None:
            spy.wait(60)

    def _profile(self, srv: OnwardServer, name: str) -> subprocess.Popen[bytes]:
        """py-spy on the server until it exits, as collapsed stacks (read them with bench.profile)."""
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"{name}.txt"
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            raise RuntimeError(f"--profile needs py-spy ({spy}): `make bench` installs it (the bench extra)")
        self.progress(f"profiling server {srv.pid} into {out}")
        return subprocess.Popen(
            [str(spy), "record", "--pid", str(srv.pid), "--rate", "250",
             "--format", "raw", "--threads", "--output", str(out), "--nonblocking",
             *os.environ.get("BENCH_PY_SPY_ARGS", "").split()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


_PF_EXITING = 0x4  # task flag: in the kernel's exit path
_SIGKILL_BIT = 1 << (9 - 1)


def process_state(pid: int) -> str:
    """"gone", "zombie", "dying" (SIGKILL pending or already exiting: it can run no more code, the
    kernel is tearing it down) or "alive"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "gone"
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return "zombie"
    if int(fields[6]) & _PF_EXITING:
        return "dying"
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & _SIGKILL_BIT:
            return "dying"
    return "alive"


def process_alive(pid: int) -> bool:
    """True while `pid` exists and can still run: not gone, a zombie or dying of SIGKILL."""
    return process_state(pid) == "alive"


def run_processes(run_id: str) -> list[int]:
    """Host pids of the processes a run's commands started: Onward puts ONWARD_RUN_ID=<run id>
    in every command's environment (the marker crash recovery uses). Needs to read /proc/*/environ."""
    marker = f"ONWARD_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry))
    return found


def namespace_pid(pid: int) -> int:
    """The pid `pid` has inside its innermost pid namespace (what `$$` printed in a sandbox)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return pid


def wait_dead(pid: int, timeout: float) -> bool:
    """Poll until `pid` is gone (or a zombie); False if it still lives after `timeout` s."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def runqueue_wait_seconds(pid: int) -> float:
    """Time `pid`'s threads spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat):
    on a shared machine, how much other processes held the server back."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU time `pid` has used so far; system time is mostly the kernel's side of
    sockets (every read and write of a stream is a system call)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@dataclass
class Result:
    """What a scenario hands back.

    `metrics` are the flat keys of latest.json; `samples` are distributions (ms) for the plot;
    `details` holds the scenario's settings and every secondary number; `problems` lists broken
    correctness checks (gaps, duplicates, a process alive after Stop), which fail the bench.
    """

    metrics: dict[str, float | int | None]
    samples: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
