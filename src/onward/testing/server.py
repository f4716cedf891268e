"""A real `onward serve` subprocess on a free port, for tests and benchmarks.

It is the product as users run it: its own process, SQLite on disk, TCP. `kill()` sends any
signal (SIGKILL for crash tests) and `start()` again reuses the same home, so recovery is real.
The first admin gets a known password (ONWARD_ADMIN_PASSWORD, kept in the home so that another
OnwardServer on the same home knows it); `auth_headers()`, `login()` and `create_user()` go
through the real API.
"""

from __future__ import annotations

import os
import secrets
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
        if "admin_password" in settings:  # "": the server makes up one and prints it
            self.admin_password = str(settings["admin_password"])
        else:
            self.admin_password = self._known_password()
            self.env["ONWARD_ADMIN_PASSWORD"] = self.admin_password
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "server.log"
        self._admin_token: str | None = None

    def _known_password(self) -> str:
        path = self.home / "test-admin-password"
        try:
            return path.read_text().strip()
        except OSError:
            password = secrets.token_urlsafe(16)
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(password)
            return password

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
        """Bearer headers of the server's admin (empty while the server is not running)."""
        if self._admin_token is None:
            if self.proc is None or self.proc.poll() is not None:
                return {}
            self._admin_token = self.token("admin", self.admin_password)
        return {"Authorization": f"Bearer {self._admin_token}"}

    def token(self, name: str, password: str) -> str:
        """Log in as `name` and create an API token (the session is closed again)."""
        with httpx.Client(base_url=self.url, timeout=30) as http:
            r = http.post("/api/auth/login", json={"username": name, "password": password})
            if r.status_code != 200:
                raise RuntimeError(f"login as {name!r} failed: {r.status_code} {r.text}")
            csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
            r = http.post("/api/tokens", json={"name": "onward.testing"}, headers=csrf)
            if r.status_code != 201:
                raise RuntimeError(f"creating a token for {name!r} failed: {r.status_code} {r.text}")
            token: str = r.json()["token"]
            http.post("/api/auth/logout", headers=csrf)
        return token

    def login(self, name: str, password: str) -> dict[str, str]:
        """Bearer headers for user `name`."""
        return {"Authorization": f"Bearer {self.token(name, password)}"}

    def create_user(self, name: str, password: str, admin: bool = False) -> dict[str, object]:
        """Add a user through the admin API; returns it as the API shows it."""
        r = httpx.post(
            f"{self.url}/api/admin/users",
            json={"name": name, "password": password, "is_admin": admin},
            headers=self.auth_headers(),
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError(f"creating user {name!r} failed: {r.status_code} {r.text}")
        user: dict[str, object] = r.json()
        return user

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def __enter__(self) -> OnwardServer:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
