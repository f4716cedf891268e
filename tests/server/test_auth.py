"""Accounts over HTTP against a real server: the first-start link, sessions and CSRF, API tokens,
logout, throttling with backoff, disabled users, and logins that say nothing about who exists."""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer

WRONG = {"error": {"code": "invalid_credentials", "message": "wrong username or password"}}


@contextlib.contextmanager
def login(url: str, name: str, password: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding the session cookie, and the CSRF token."""
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/api/auth/login", json={"username": name, "password": password})
        assert r.status_code == 200, r.text
        yield http, r.json()["csrf_token"]


@pytest.fixture(scope="module")
def users(server: OnwardServer) -> dict[str, str]:
    passwords = {"ann": "ann-password-1", "ben": "ben-password-1"}
    for name, password in passwords.items():
        server.create_user(name, password)
    return passwords


def test_first_start_prints_a_one_time_login_link(server: OnwardServer) -> None:
    tokens = re.findall(r"Onward is ready: open (http://\S+)/\?login_token=(\S+)", server.log())
    assert tokens, server.log()
    base, token = tokens[0]
    assert base == server.url
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/api/auth/login", json={"login_token": token})
        assert r.status_code == 200, r.text
        assert r.json()["user"]["name"] == "admin" and r.json()["user"]["is_admin"] is True
        me = http.get("/api/auth/me").json()
        assert me["name"] == "admin" and me["csrf_token"] == r.json()["csrf_token"]
        again = httpx.post(f"{server.url}/api/auth/login", json={"login_token": token})
        assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_credentials"


def test_a_random_admin_password_is_printed_once_and_the_cookie_can_be_secure(llm: ScriptedLLM, tmp_path: Path) -> None:
    with OnwardServer(tmp_path / "home", llm.base_url, admin_password="", cookie_secure=True) as srv:
        passwords = re.findall(r"log in as admin with the password (\S+)", srv.log())
        assert len(passwords) == 1
        r = httpx.post(f"{srv.url}/api/auth/login", json={"username": "admin", "password": passwords[0]})
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()
    with OnwardServer(tmp_path / "home", llm.base_url, admin_password="") as again:
        assert "log in as admin" not in again.log().split("Finished server process")[-1]


def test_login_sets_an_httponly_samesite_cookie(server: OnwardServer, users: dict[str, str]) -> None:
    r = httpx.post(f"{server.url}/api/auth/login", json={"username": "ann", "password": users["ann"]})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == {"id": body["user"]["id"], "name": "ann", "is_admin": False}
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("onward_session=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie and "secure" not in cookie


def test_every_endpoint_but_login_health_and_static_needs_a_user(server: OnwardServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/api/health").status_code == 200
        assert http.get("/").status_code == 200
        for method, path in [
            ("GET", "/api/auth/me"), ("GET", "/api/models"), ("GET", "/api/conversations"),
            ("POST", "/api/conversations"), ("GET", "/api/runs"), ("GET", "/api/runs/run_x"),
            ("GET", "/api/runs/run_x/stream"), ("GET", "/api/tokens"), ("GET", "/api/files"),
            ("GET", "/api/admin/users"), ("POST", "/api/auth/logout"),
        ]:
            r = http.request(method, path)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
        r = http.get("/api/conversations", headers={"Authorization": "Bearer onw_not-a-token"})
        assert r.status_code == 401 and "invalid or revoked" in r.json()["error"]["message"]


def test_cookie_requests_that_change_state_need_the_csrf_token(server: OnwardServer, users: dict[str, str]) -> None:
    with login(server.url, "ann", users["ann"]) as (http, csrf):
        assert http.get("/api/conversations").status_code == 200  # reading needs no token
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
            r = http.post("/api/conversations", json={"title": "x"}, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        assert http.get("/api/conversations").json()["conversations"] == []
        r = http.post("/api/conversations", json={"title": "x"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201
        cid = r.json()["id"]
        assert http.delete(f"/api/conversations/{cid}").status_code == 403
        assert http.delete(f"/api/conversations/{cid}", headers={"X-CSRF-Token": csrf}).status_code == 204
        # another session's token is not this session's
        with login(server.url, "ann", users["ann"]) as (_, other):
            assert http.post("/api/conversations", headers={"X-CSRF-Token": other}).status_code == 403


def test_bearer_tokens_need_no_csrf_token(server: OnwardServer, users: dict[str, str]) -> None:
    headers = server.login("ann", users["ann"])
    r = httpx.post(f"{server.url}/api/conversations", json={"title": "from a script"}, headers=headers)
    assert r.status_code == 201


def test_logout_ends_the_session_on_the_server(server: OnwardServer, users: dict[str, str]) -> None:
    with login(server.url, "ann", users["ann"]) as (http, csrf):
        cookie = http.cookies["onward_session"]
        assert http.post("/api/auth/logout").status_code == 403  # logging out changes state, too
        assert http.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    # the cookie value itself is now worthless, whoever kept a copy
    r = httpx.get(f"{server.url}/api/auth/me", cookies={"onward_session": cookie})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_api_tokens_are_shown_once_listed_without_secret_and_revoked(server: OnwardServer, users: dict[str, str]) -> None:
    with login(server.url, "ben", users["ben"]) as (http, csrf):
        r = http.post("/api/tokens", json={"name": "laptop"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201
        created = r.json()
        assert set(created) >= {"id", "name", "token", "created_at"} and created["token"].startswith("onw_")
        bearer = {"Authorization": f"Bearer {created['token']}"}
        me = httpx.get(f"{server.url}/api/auth/me", headers=bearer).json()
        assert me["name"] == "ben" and me["via"] == "token" and me["csrf_token"] is None
        listed = http.get("/api/tokens").json()["tokens"]
        mine = next(t for t in listed if t["id"] == created["id"])
        assert mine["name"] == "laptop" and mine["last_used_at"] is not None
        assert all("token" not in t for t in listed)
        assert created["token"] not in http.get("/api/tokens").text
        r = httpx.delete(f"{server.url}/api/tokens/{created['id']}", headers=bearer)  # a token can revoke itself
        assert r.status_code == 204
        assert httpx.get(f"{server.url}/api/auth/me", headers=bearer).status_code == 401
        assert http.delete(f"/api/tokens/{created['id']}", headers={"X-CSRF-Token": csrf}).status_code == 404
        assert all(t["id"] != created["id"] for t in http.get("/api/tokens").json()["tokens"])


def test_wrong_password_and_unknown_user_are_indistinguishable(server: OnwardServer, users: dict[str, str]) -> None:
    def attempt(name: str, password: str) -> tuple[int, object, float]:
        started = time.perf_counter()
        r = httpx.post(f"{server.url}/api/auth/login", json={"username": name, "password": password}, timeout=30)
        return r.status_code, r.json(), time.perf_counter() - started

    wrong_password, unknown_user = [], []
    for i in range(4):  # interleaved, so that both see the same load
        wrong_password.append(attempt("ann", f"not-it-{i}"))
        unknown_user.append(attempt(f"nobody{i}", "not-it"))
    httpx.post(f"{server.url}/api/auth/login", json={"username": "ann", "password": users["ann"]})  # reset ann's count
    assert {(s, str(b)) for s, b, _ in wrong_password + unknown_user} == {(401, str(WRONG))}
    known, unknown = statistics.median(t for *_, t in wrong_password), statistics.median(t for *_, t in unknown_user)
    assert abs(known - unknown) < 0.5 * max(known, unknown), (known, unknown)


@pytest.fixture(scope="module")
def strict(llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnwardServer]:
    """A server that throttles early: 3 failures per username, 12 per IP, backoff from 1 s."""
    srv = OnwardServer(
        tmp_path_factory.mktemp("strict"), llm.base_url,
        login_max_failures=3, login_ip_max_failures=12, login_backoff_base_s=1, login_backoff_max_s=4,
    )
    with srv:
        srv.create_user("dora", "dora-password")
        yield srv


def post_login(srv: OnwardServer, name: str, password: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/api/auth/login", json={"username": name, "password": password}, timeout=30)


def wait_out(r: httpx.Response) -> None:
    """Wait as long as the server said to (the backoff is the contract being tested)."""
    time.sleep(int(r.headers["Retry-After"]) + 0.05)


def test_login_throttling_per_username_backs_off_exponentially(strict: OnwardServer) -> None:
    for _ in range(3):
        assert post_login(strict, "dora", "wrong").status_code == 401
    blocked = post_login(strict, "dora", "dora-password")  # even the right password waits
    assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "rate_limited"
    assert blocked.headers["Retry-After"] == "1"
    wait_out(blocked)
    assert post_login(strict, "dora", "wrong").status_code == 401  # 4th failure: 2 s
    second = post_login(strict, "dora", "dora-password")
    assert second.status_code == 429 and second.headers["Retry-After"] == "2"
    wait_out(second)
    assert post_login(strict, "dora", "dora-password").status_code == 200  # success forgives
    assert post_login(strict, "dora", "wrong").status_code == 401


def test_unknown_usernames_are_throttled_alike(strict: OnwardServer) -> None:
    for _ in range(3):
        assert post_login(strict, "ghost", "wrong").status_code == 401
    r = post_login(strict, "ghost", "wrong")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"


def test_login_throttling_per_ip(strict: OnwardServer) -> None:
    r = post_login(strict, "ip-probe", "wrong")
    while r.status_code == 401:  # other tests of this module spent some of the IP's budget
        r = post_login(strict, f"name{time.monotonic_ns()}", "wrong")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    fresh = post_login(strict, f"fresh{time.monotonic_ns()}", "wrong")  # a new name does not help
    assert fresh.status_code == 429
    wait_out(fresh)


def test_a_disabled_user_cannot_log_in_and_its_tokens_and_sessions_stop(server: OnwardServer) -> None:
    user = server.create_user("cleo", "cleo-password")
    bearer = server.login("cleo", "cleo-password")
    admin = server.auth_headers()
    with login(server.url, "cleo", "cleo-password") as (http, _):
        assert http.get("/api/auth/me").status_code == 200
        r = httpx.patch(f"{server.url}/api/admin/users/{user['id']}", json={"disabled": True}, headers=admin)
        assert r.status_code == 200 and r.json()["disabled"] is True
        assert http.get("/api/auth/me").status_code == 401
    assert httpx.get(f"{server.url}/api/auth/me", headers=bearer).status_code == 401
    r = post_login(server, "cleo", "cleo-password")
    assert r.status_code == 401 and r.json()["error"]["code"] == "account_disabled"
    assert post_login(server, "cleo", "wrong").json() == WRONG  # without the password, nothing is revealed
    httpx.patch(f"{server.url}/api/admin/users/{user['id']}", json={"disabled": False}, headers=admin)
    assert httpx.get(f"{server.url}/api/auth/me", headers=bearer).status_code == 200


def test_a_new_password_ends_the_users_sessions(server: OnwardServer) -> None:
    user = server.create_user("dave", "dave-password")
    with login(server.url, "dave", "dave-password") as (http, _):
        r = httpx.patch(f"{server.url}/api/admin/users/{user['id']}", json={"password": "dave-new-password"}, headers=server.auth_headers())
        assert r.status_code == 200
        assert http.get("/api/auth/me").status_code == 401
    assert post_login(server, "dave", "dave-password").status_code == 401
    assert post_login(server, "dave", "dave-new-password").status_code == 200


def test_user_names_and_passwords_are_checked(server: OnwardServer) -> None:
    admin = server.auth_headers()
    server.create_user("fay", "fay-password")
    for body, status in [
        ({"name": "Has Space", "password": "long-enough"}, 400),
        ({"name": "short", "password": "short"}, 400),
        ({"name": "fay", "password": "long-enough"}, 409),
        ({"name": "FAY", "password": "long-enough"}, 409),  # names are lower case
    ]:
        r = httpx.post(f"{server.url}/api/admin/users", json=body, headers=admin)
        assert r.status_code == status, (body, r.text)
    names = [u["name"] for u in httpx.get(f"{server.url}/api/admin/users", headers=admin).json()["users"]]
    assert "has space" not in names and "short" not in names and names.count("fay") == 1
