"""Accounts without a server: argon2id hashes, the login throttle's backoff, user names, upload
names, and the CLI's credentials file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from onward import credentials
from onward.accounts.passwords import check_policy, hash_password, verify_password
from onward.accounts.service import normalize_name
from onward.accounts.throttle import LoginThrottle
from onward.accounts.tokens import digest, new_secret, same
from onward.config import Settings
from onward.errors import BadRequest, TooManyRequests
from onward.workspaces import clean_filename


def test_passwords_are_argon2id_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert hashed != hash_password("correct horse")  # salted
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong horse")
    assert not verify_password(None, "correct horse")  # no such user: same work, False
    assert not verify_password("not a hash", "x")
    with pytest.raises(BadRequest):
        check_policy("short")


def test_tokens_are_random_and_stored_as_digests() -> None:
    a, b = new_secret("onw_"), new_secret("onw_")
    assert a != b and a.startswith("onw_") and len(a) > 40
    assert digest(a) == digest(a) and len(digest(a)) == 64 and a not in digest(a)
    assert same(a, a) and not same(a, b)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock) -> LoginThrottle:
    settings = Settings(login_max_failures=3, login_ip_max_failures=10, login_backoff_base_s=2, login_backoff_max_s=10, login_failure_window_s=60)
    return LoginThrottle(settings, clock)


def test_throttle_backs_off_exponentially_per_username_and_forgives_success() -> None:
    clock = Clock()
    t = throttle(clock)
    for _ in range(3):
        t.attempt("1.2.3.4", "Ann")
    with pytest.raises(TooManyRequests) as blocked:
        t.attempt("1.2.3.4", "ann")  # names are compared in lower case
    assert blocked.value.retry_after == 2 and blocked.value.headers["Retry-After"] == "2"
    t.attempt("5.6.7.8", "bob")  # other names and addresses are not affected
    clock.now += 2
    t.attempt("1.2.3.4", "ann")  # the 4th failure: now 4 s
    with pytest.raises(TooManyRequests) as blocked:
        t.attempt("1.2.3.4", "ann")
    assert blocked.value.retry_after == 4
    clock.now += 4
    t.attempt("1.2.3.4", "ann")
    t.succeeded("1.2.3.4", "ann")  # a success starts the username afresh
    for _ in range(3):
        t.attempt("1.2.3.4", "ann")
    with pytest.raises(TooManyRequests):
        t.attempt("1.2.3.4", "ann")
    clock.now += 120  # and failures are forgotten after the window
    t.attempt("1.2.3.4", "ann")
    t.attempt("1.2.3.4", "ann")


def test_throttle_waits_double_up_to_the_cap() -> None:
    clock = Clock()
    t = throttle(clock)
    seen = []
    for _ in range(7):
        while True:
            try:
                t.attempt("9.9.9.9", "eve")
                break
            except TooManyRequests as exc:
                seen.append(exc.retry_after)
                clock.now += exc.retry_after
    assert seen == [2, 4, 8, 10]  # base 2 s, doubling, capped at 10 s


def test_throttle_counts_attempts_before_the_answer_so_bursts_are_throttled() -> None:
    t = throttle(Clock())
    for _ in range(3):
        t.attempt("1.1.1.1", "zed")  # three in flight, none answered yet
    with pytest.raises(TooManyRequests):
        t.attempt("1.1.1.1", "zed")


def test_throttle_per_ip_covers_every_name() -> None:
    t = throttle(Clock())
    for i in range(10):
        t.attempt("6.6.6.6", f"name{i}")
    with pytest.raises(TooManyRequests):
        t.attempt("6.6.6.6", "fresh-name")


def test_user_names_are_normalized_and_checked() -> None:
    assert normalize_name("  Alice ") == "alice"
    for bad in ("", "a b", "-x", "x" * 65, "ä", "a/b"):
        with pytest.raises(BadRequest):
            normalize_name(bad)


def test_uploaded_file_names_are_one_safe_component() -> None:
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\temp\\a.txt") == "a.txt"
    assert clean_filename("résumé.pdf") == "résumé.pdf"
    for bad in ("", ".", "..", "dir/", "bell\x07.txt", "nul\x00.txt", "x" * 300):
        with pytest.raises(BadRequest):
            clean_filename(bad)


def test_credentials_file_is_private_and_per_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert credentials.stored_token("http://a:1") is None
    path = credentials.save("http://a:1/", "onw_a", "tok_a", "ann")
    credentials.save("http://b:2", "onw_b", "tok_b", "bob")
    assert path == tmp_path / "cfg" / "onward" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.stored_token("http://a:1") == "onw_a" and credentials.stored_token("http://b:2") == "onw_b"
    assert credentials.forget("http://a:1") == {"token": "onw_a", "token_id": "tok_a", "username": "ann"}
    assert credentials.stored_token("http://a:1") is None and credentials.stored_token("http://b:2") == "onw_b"
