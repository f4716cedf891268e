"""The workspace over HTTP: list, upload, download, delete; size limit; sanitized names; and the
same confinement as the tools, symlinks made by commands included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.conftest import SERVER_SETTINGS
from tests.server.helpers import Api, tool_call

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnwardServer]:
    with OnwardServer(tmp_path_factory.mktemp("home"), llm.base_url, max_upload_bytes=LIMIT, **SERVER_SETTINGS) as srv:
        yield srv


@pytest.fixture(scope="module")
def user(server: OnwardServer) -> Iterator[tuple[Api, Path]]:
    created = server.create_user("filer", "filer-password")
    api = Api(server.url, server.login("filer", "filer-password"))
    yield api, server.home / "workspaces" / str(created["id"])
    api.http.close()


def upload(api: Api, name: str, data: bytes, path: str = "") -> dict[str, object]:
    r = api.http.post("/api/files/upload", params={"path": path}, files={"file": (name, data)})
    assert r.status_code == 201, r.text
    return dict(r.json())


def names(api: Api, path: str = "") -> dict[str, str]:
    r = api.http.get("/api/files", params={"path": path})
    assert r.status_code == 200, r.text
    return {e["name"]: e["type"] for e in r.json()["entries"]}


def test_upload_list_download_delete(user: tuple[Api, Path]) -> None:
    api, workspace = user
    assert upload(api, "notes.txt", b"hello\n") == {"path": "notes.txt", "size": 6}
    (workspace / "src").mkdir()
    assert upload(api, "main.py", b"print(1)\n", path="src") == {"path": "src/main.py", "size": 9}
    listing = api.http.get("/api/files").json()
    assert listing["path"] == "" and not listing["truncated"]
    entry = next(e for e in listing["entries"] if e["name"] == "notes.txt")
    assert entry["type"] == "file" and entry["size"] == 6 and entry["modified"] and entry["path"] == "notes.txt"
    assert api.http.get("/api/files", params={"path": "src"}).json()["entries"][0]["path"] == "src/main.py"
    assert names(api)["src"] == "dir" and names(api, "src") == {"main.py": "file"}
    r = api.http.get("/api/files/download", params={"path": "src/main.py"})
    assert r.status_code == 200 and r.content == b"print(1)\n"
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''main.py"
    assert upload(api, "notes.txt", b"replaced")["size"] == 8  # same name: replaced
    assert (workspace / "notes.txt").read_bytes() == b"replaced"
    assert api.http.delete("/api/files", params={"path": "notes.txt"}).status_code == 204
    assert api.http.delete("/api/files", params={"path": "src"}).status_code == 204  # with its contents
    assert "notes.txt" not in names(api) and not (workspace / "src").exists()
    assert api.http.delete("/api/files", params={"path": "notes.txt"}).status_code == 404


def test_uploaded_names_are_sanitized(user: tuple[Api, Path]) -> None:
    api, workspace = user
    assert upload(api, "../../escape.txt", b"x")["path"] == "escape.txt"
    assert upload(api, "C:\\Users\\me\\win.txt", b"x")["path"] == "win.txt"
    assert (workspace / "escape.txt").is_file() and not (workspace.parent / "escape.txt").exists()
    for bad in ("..", ".", "sub/"):
        r = api.http.post("/api/files/upload", files={"file": (bad, b"x")})
        assert r.status_code == 400, (bad, r.text)
    assert not [p for p in workspace.iterdir() if p.name.endswith(".upload")]  # no temporary leftovers


def test_uploads_past_the_limit_are_413_and_leave_nothing(user: tuple[Api, Path]) -> None:
    api, workspace = user
    assert upload(api, "fits.bin", b"x" * (LIMIT - 100))["size"] == LIMIT - 100
    r = api.http.post("/api/files/upload", files={"file": ("big.bin", b"x" * (LIMIT + 1))})
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["error"]["message"]
    r = api.http.post("/api/files/upload", files={"file": ("huge.bin", b"x" * (LIMIT * 4))})
    assert r.status_code == 413
    assert not (workspace / "big.bin").exists() and not (workspace / "huge.bin").exists()
    assert not [p for p in workspace.iterdir() if p.name.endswith(".upload")]


def test_paths_outside_the_workspace_are_404(user: tuple[Api, Path], server: OnwardServer) -> None:
    api, _ = user
    for method, url, params in [
        ("GET", "/api/files", {"path": ".."}),
        ("GET", "/api/files", {"path": "/etc"}),
        ("GET", "/api/files/download", {"path": "../../onward.db"}),
        ("GET", "/api/files/download", {"path": str(server.home / "onward.db")}),
        ("DELETE", "/api/files", {"path": "../x"}),
        ("POST", "/api/files/upload", {"path": "../.."}),
    ]:
        kwargs = {"files": {"file": ("x.txt", b"x")}} if method == "POST" else {}
        r = api.http.request(method, url, params=params, **kwargs)
        assert r.status_code == 404, (method, url, params, r.text)
    assert api.http.delete("/api/files", params={"path": ""}).status_code == 400
    assert api.http.get("/api/files/download", params={"path": ""}).status_code == 400


def test_a_symlink_made_by_a_command_is_not_followed_out(user: tuple[Api, Path], llm: ScriptedLLM, server: OnwardServer, tmp_path: Path) -> None:
    api, workspace = user
    victim = tmp_path / "victim.txt"
    victim.write_text("outside secret")
    (tmp_path / "victim-dir").mkdir()
    command = f"ln -s {victim} leak.txt; ln -s {tmp_path / 'victim-dir'} leakdir; ln -s {server.home} home; mkdir -p real; ln -s real inside; echo ok"
    llm.script([{"tool_calls": [tool_call("run_command", {"command": command})]}, {"text": "linked"}], match="SYMLINKS")
    rid = api.start(api.conversation(), "SYMLINKS")["id"]
    assert api.wait_terminal(rid)[-1]["type"] == "run.completed"
    assert (workspace / "leak.txt").is_symlink()
    for method, url, params in [
        ("GET", "/api/files/download", {"path": "leak.txt"}),
        ("GET", "/api/files", {"path": "leakdir"}),
        ("GET", "/api/files", {"path": "home"}),
        ("GET", "/api/files/download", {"path": "home/onward.db"}),
        ("POST", "/api/files/upload", {"path": "leakdir"}),
        ("DELETE", "/api/files", {"path": "leakdir/anything"}),
    ]:
        kwargs = {"files": {"file": ("x.txt", b"x")}} if method == "POST" else {}
        r = api.http.request(method, url, params=params, **kwargs)
        assert r.status_code == 404, (method, url, params, r.text)
        assert "outside secret" not in r.text
    assert not (tmp_path / "victim-dir" / "x.txt").exists()
    # symlinks inside the workspace work; deleting a link removes the link, never its target
    assert upload(api, "via-link.txt", b"ok", path="inside")["path"] == "real/via-link.txt"
    listing = api.http.get("/api/files").json()["entries"]
    assert next(e for e in listing if e["name"] == "leak.txt")["symlink"] is True
    assert api.http.delete("/api/files", params={"path": "leak.txt"}).status_code == 204
    assert api.http.delete("/api/files", params={"path": "leakdir"}).status_code == 204
    assert victim.read_text() == "outside secret" and (tmp_path / "victim-dir").is_dir()
    assert not (workspace / "leak.txt").exists()
