"""The CLI's stored API tokens: `$XDG_CONFIG_HOME/onward/credentials.json` (else ~/.config/…),
mode 0600, one entry per server URL. `onward login` writes an entry and `onward logout` removes it;
ONWARD_TOKEN (or --token) always wins over the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "onward" / "credentials.json"


def _key(url: str) -> str:
    return url.rstrip("/")


def _read() -> dict[str, Any]:
    try:
        data = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return {}
    servers = data.get("servers") if isinstance(data, dict) else None
    return servers if isinstance(servers, dict) else {}


def _write(servers: dict[str, Any]) -> None:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"servers": servers}, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def stored(url: str) -> dict[str, Any] | None:
    """The entry for this server: {token, token_id, username}; None if there is none."""
    entry = _read().get(_key(url))
    return entry if isinstance(entry, dict) and isinstance(entry.get("token"), str) else None


def stored_token(url: str) -> str | None:
    entry = stored(url)
    return str(entry["token"]) if entry else None


def save(url: str, token: str, token_id: str, username: str) -> Path:
    servers = _read()
    servers[_key(url)] = {"token": token, "token_id": token_id, "username": username}
    _write(servers)
    return credentials_path()


def forget(url: str) -> dict[str, Any] | None:
    """Remove this server's entry; returns it (None if there was none)."""
    servers = _read()
    entry = servers.pop(_key(url), None)
    if entry is not None:
        _write(servers)
    return entry if isinstance(entry, dict) else None
