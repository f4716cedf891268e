"""A real `onward serve` subprocess on a free port, for tests and benchmarks.

It is the product as users run it: its own process, SQLite on disk, TCP. `kill()` sends any
signal (SIGKILL for crash tests) and `start()` again reuses the same home, so recovery is real.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OnwardServer:
    def __init__(self, home: Path, llm_base_url: str | None = None, **settings: object) -> None:
        self.home = Path(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ONWARD_")}
        self.env.update({"ONWARD_HOME": str(self.home), "ONWARD_HOST": "127.0.0.1", "ONWARD_PORT": str(self.port)})
        if llm_base_url:
            self.env.update(
                {"ONWARD_LLM_BASE_URL": llm_base_url, "ONWARD_LLM_MODEL": "scripted", "ONWARD_LLM_API_KEY": "test"}
            )
        for key, value in settings.items():
            self.env[f"ONWARD_{key.upper()}"] = str(value)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> OnwardServer:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onward", "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"onward serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"onward serve did not answer within {timeout} s:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL, wait: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(wait)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate as the server's admin (empty until accounts exist)."""
        return {}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def __enter__(self) -> OnwardServer:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
