"""`onward user …` on the server's database (here while the server runs), and `onward login` /
`onward logout` keeping a token in the user's config directory."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from onward.testing.server import OnwardServer


def onward(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ONWARD_") and k != "XDG_CONFIG_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "onward", *args], env={**clean, **env}, input=stdin,
        capture_output=True, text=True, timeout=60,
    )


def login_status(server: OnwardServer, name: str, password: str) -> tuple[int, str]:
    r = httpx.post(f"{server.url}/api/auth/login", json={"username": name, "password": password})
    return r.status_code, r.json().get("error", {}).get("code", "")


def test_user_commands_manage_accounts_in_the_database(server: OnwardServer) -> None:
    env = {"ONWARD_HOME": str(server.home)}
    added = onward("user", "add", "Carl", "--password-stdin", env=env, stdin="carl-password\n")
    assert added.returncode == 0, added.stderr
    assert "added user carl" in added.stdout
    assert login_status(server, "carl", "carl-password") == (200, "")
    listed = onward("user", "list", env=env)
    assert listed.returncode == 0 and "carl" in listed.stdout and "admin" in listed.stdout

    again = onward("user", "add", "carl", "--password-stdin", env=env, stdin="carl-password\n")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    short = onward("user", "add", "dan", "--password-stdin", env=env, stdin="short\n")
    assert short.returncode == 2 and "at least 8" in short.stderr

    changed = onward("user", "passwd", "carl", "--password-stdin", env=env, stdin="carl-new-password\n")
    assert changed.returncode == 0, changed.stderr
    assert login_status(server, "carl", "carl-password")[0] == 401
    assert login_status(server, "carl", "carl-new-password")[0] == 200

    assert onward("user", "disable", "carl", env=env).returncode == 0
    assert login_status(server, "carl", "carl-new-password") == (401, "account_disabled")
    assert onward("user", "enable", "carl", env=env).returncode == 0
    assert login_status(server, "carl", "carl-new-password")[0] == 200
    missing = onward("user", "disable", "nobody", env=env)
    assert missing.returncode == 2 and "no user 'nobody'" in missing.stderr


def test_login_stores_a_token_that_later_commands_use_and_logout_revokes_it(server: OnwardServer, tmp_path: Path) -> None:
    server.create_user("lena", "lena-password")
    env = {"ONWARD_URL": server.url, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    before = onward("runs", env=env)
    assert before.returncode == 2 and "onward login" in before.stderr

    wrong = onward("login", "--username", "lena", "--password-stdin", env=env, stdin="not-it\n")
    assert wrong.returncode == 2 and "wrong username or password" in wrong.stderr
    done = onward("login", "--username", "lena", "--password-stdin", env=env, stdin="lena-password\n")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "config" / "onward" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = json.loads(path.read_text())["servers"][server.url]
    assert entry["username"] == "lena" and entry["token"].startswith("onw_")

    assert onward("runs", env=env).returncode == 0
    assert onward("conversations", env=env).returncode == 0
    bearer = {"Authorization": f"Bearer {entry['token']}"}
    assert httpx.get(f"{server.url}/api/auth/me", headers=bearer).json()["name"] == "lena"

    out = onward("logout", env=env)
    assert out.returncode == 0 and "logged out" in out.stdout
    assert httpx.get(f"{server.url}/api/auth/me", headers=bearer).status_code == 401
    assert server.url not in json.loads(path.read_text())["servers"]
    assert onward("runs", env=env).returncode == 2
