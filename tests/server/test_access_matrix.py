"""Two users, every endpoint: each one's conversations, runs, events, streams, cancels, files and
tokens are 404 to the other — the same answer as for ids that do not exist — and never appear in
the other's lists. Admin endpoints are 404 to non-admins. The endpoint list comes from the OpenAPI
schema, so a new endpoint fails this test until it is in the matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from onward.app import create_app
from onward.config import Settings
from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import Api, tool_call


@dataclass
class Owner:
    name: str
    api: Api
    id: str = ""
    conversation: str = ""
    done_run: str = ""
    active_run: str = ""
    token_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _setup(server: OnwardServer, llm: ScriptedLLM, name: str) -> Owner:
    password = f"{name}-password"
    user = server.create_user(name, password)
    owner = Owner(name, Api(server.url, server.login(name, password)), id=str(user["id"]))
    owner.conversation = owner.api.conversation(f"{name}'s conversation")
    owner.done_run = owner.api.start(owner.conversation, f"MATRIX-DONE {name}")["id"]
    owner.api.wait_terminal(owner.done_run)
    busy = owner.api.conversation(f"{name}'s busy conversation")
    owner.extra["busy_conversation"] = busy
    owner.active_run = owner.api.start(busy, f"MATRIX-BUSY {name}")["id"]
    owner.api.wait_for(owner.active_run, lambda e: e["type"] == "tool.output")
    r = owner.api.http.post("/api/files/upload", files={"file": ("secret.txt", f"{name}'s secret".encode())})
    assert r.status_code == 201, r.text
    owner.api.http.post("/api/files/upload?path=", files={"file": ("other.txt", b"x")})
    r = owner.api.http.post("/api/tokens", json={"name": "matrix"})
    owner.token_id = r.json()["id"]
    return owner


@pytest.fixture(scope="module")
def pair(server: OnwardServer, llm: ScriptedLLM) -> Any:
    llm.script([{"text": "done"}], match="MATRIX-DONE")
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 120"})]}], match="MATRIX-BUSY")
    alice, bob = _setup(server, llm, "alice"), _setup(server, llm, "bob")
    yield alice, bob
    for owner in (alice, bob):
        owner.api.http.post(f"/api/runs/{owner.active_run}/cancel")
        owner.api.http.close()


def requests_against(victim: Owner) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(OpenAPI path, method, concrete URL, request kwargs) for every endpoint that takes another
    user's resource."""
    c, r, a, t, u = victim.conversation, victim.done_run, victim.active_run, victim.token_id, victim.id
    outside = f"../{u}/secret.txt"
    return [
        ("/api/conversations/{cid}", "GET", f"/api/conversations/{c}", {}),
        ("/api/conversations/{cid}", "PATCH", f"/api/conversations/{c}", {"json": {"title": "mine now"}}),
        ("/api/conversations/{cid}", "DELETE", f"/api/conversations/{c}", {}),
        ("/api/conversations/{cid}/runs", "POST", f"/api/conversations/{c}/runs", {"json": {"input": "hi"}}),
        ("/api/runs/{rid}", "GET", f"/api/runs/{r}", {}),
        ("/api/runs/{rid}/events", "GET", f"/api/runs/{r}/events", {}),
        ("/api/runs/{rid}/events", "GET", f"/api/runs/{a}/events?wait=1", {}),
        ("/api/runs/{rid}/stream", "GET", f"/api/runs/{a}/stream", {}),
        ("/api/runs/{rid}/cancel", "POST", f"/api/runs/{a}/cancel", {}),
        ("/api/runs/{rid}/cancel", "POST", f"/api/runs/{r}/cancel", {}),
        ("/api/tokens/{token_id}", "DELETE", f"/api/tokens/{t}", {}),
        ("/api/files", "GET", f"/api/files?path=../{u}", {}),
        ("/api/files", "GET", f"/api/files?path={Path(Settings(home=Path('/x')).workspaces_dir, u)}", {}),
        ("/api/files/download", "GET", f"/api/files/download?path={outside}", {}),
        ("/api/files", "DELETE", f"/api/files?path={outside}", {}),
        ("/api/files/upload", "POST", f"/api/files/upload?path=../{u}", {"files": {"file": ("x.txt", b"x")}}),
        ("/api/admin/users", "GET", "/api/admin/users", {}),
        ("/api/admin/users", "POST", "/api/admin/users", {"json": {"name": "mallory", "password": "mallory-pw"}}),
        ("/api/admin/users/{user_id}", "PATCH", f"/api/admin/users/{u}", {"json": {"disabled": True}}),
        ("/api/admin/runs", "GET", "/api/admin/runs?active=true", {}),
        ("/api/admin/runs/{rid}/cancel", "POST", f"/api/admin/runs/{a}/cancel", {}),
    ]


# Endpoints that take no resource of anyone (the caller's own lists and selves, public ones):
# their isolation is checked by the list tests below (the activity feed's in test_activity.py).
OWN_ONLY = {
    ("/api/health", "GET"), ("/api/models", "GET"), ("/api/auth/login", "POST"), ("/api/auth/logout", "POST"),
    ("/api/auth/me", "GET"), ("/api/conversations", "GET"), ("/api/conversations", "POST"),
    ("/api/runs", "GET"), ("/api/tokens", "GET"), ("/api/tokens", "POST"), ("/api/activity", "GET"),
}


def test_the_matrix_covers_every_endpoint(tmp_path: Path) -> None:
    schema = create_app(Settings(home=tmp_path)).openapi()
    endpoints = {(path, method.upper()) for path, ops in schema["paths"].items() for method in ops}
    victim = Owner("v", Api("http://unused"), "usr_x", "conv_x", "run_x", "run_y", "tok_x")
    covered = {(path, method) for path, method, _, _ in requests_against(victim)} | OWN_ONLY
    victim.api.http.close()
    assert endpoints - covered == set(), "add these endpoints to the access matrix"


@pytest.mark.parametrize("direction", ["bob→alice", "alice→bob"])
def test_another_users_resources_are_404_like_nothing(pair: Any, server: OnwardServer, direction: str) -> None:
    alice, bob = pair
    intruder, victim = (bob, alice) if direction == "bob→alice" else (alice, bob)
    nobody = Owner("nobody", intruder.api, "usr_nobody", "conv_nobody", "run_nobody", "run_nobody2", "tok_nobody")
    for (path, method, url, kwargs), (_, _, ghost_url, _) in zip(requests_against(victim), requests_against(nobody), strict=True):
        r = intruder.api.http.request(method, url, **kwargs)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert r.json()["error"]["code"] == "not_found"
        ghost = intruder.api.http.request(method, ghost_url, **kwargs)
        assert ghost.status_code == 404
        # the message names what was asked for, nothing else: same text as for an id that never existed
        assert r.json()["error"]["message"].replace(victim.id, "ID").replace(victim.conversation, "C").replace(
            victim.done_run, "R").replace(victim.active_run, "R").replace(victim.token_id, "T") == ghost.json()[
            "error"]["message"].replace("usr_nobody", "ID").replace("conv_nobody", "C").replace(
            "run_nobody2", "R").replace("run_nobody", "R").replace("tok_nobody", "T"), (path, method)
    # and nothing happened to the victim's things
    assert victim.api.run(victim.active_run)["status"] == "running"
    assert victim.api.http.get(f"/api/conversations/{victim.conversation}").json()["title"] == f"{victim.name}'s conversation"
    assert victim.api.http.get("/api/files/download", params={"path": "secret.txt"}).content == f"{victim.name}'s secret".encode()
    assert any(t["id"] == victim.token_id for t in victim.api.http.get("/api/tokens").json()["tokens"])
    assert not (Path(server.home) / "workspaces" / victim.id / "x.txt").exists()
    names = [u["name"] for u in httpx.get(f"{server.url}/api/admin/users", headers=server.auth_headers()).json()["users"]]
    assert "mallory" not in names


def test_lists_never_show_another_users_things(pair: Any) -> None:
    alice, bob = pair
    for me, other in ((alice, bob), (bob, alice)):
        seen = " ".join(
            me.api.http.get(path).text
            for path in ("/api/conversations", "/api/runs", "/api/runs?active=true", "/api/tokens", "/api/files", "/api/auth/me")
        )
        for secret in (other.id, other.conversation, other.extra["busy_conversation"], other.done_run, other.active_run, other.token_id, other.name):
            assert secret not in seen, secret
        assert me.conversation in seen and me.active_run in seen


def test_admins_see_and_cancel_any_run_and_it_is_logged(pair: Any, server: OnwardServer) -> None:
    alice, _ = pair
    admin = Api(server.url, server.auth_headers())
    users = admin.http.get("/api/admin/users").json()["users"]
    assert {"alice", "bob", "admin"} <= {u["name"] for u in users}
    active = admin.http.get("/api/admin/runs", params={"active": "true"}).json()["runs"]
    mine = next(r for r in active if r["id"] == alice.active_run)
    assert mine["user_name"] == "alice"
    # the admin's own lists are still the admin's own
    assert all(r["id"] != alice.active_run for r in admin.http.get("/api/runs").json()["runs"])
    r = admin.http.post(f"/api/admin/runs/{alice.active_run}/cancel")
    assert r.status_code == 202 and r.json()["changed"] is True
    assert alice.api.wait_terminal(alice.active_run)[-1]["type"] == "run.cancelled"
    assert f"admin admin cancels run {alice.active_run} of user alice" in server.log()
    admin.http.close()
