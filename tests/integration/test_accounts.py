"""Accounts on Postgres: unique names, API tokens, sessions, and one-time login links used once."""

from __future__ import annotations

import asyncio

import pytest

from onward.accounts.tokens import digest, new_secret
from onward.errors import Conflict
from onward.store.accounts import AccountStore


async def test_user_names_are_unique(accounts: AccountStore) -> None:
    ann = await accounts.create_user("ann", "$argon2id$hash", is_admin=True)
    assert (ann.name, ann.is_admin, ann.disabled, ann.has_password) == ("ann", True, False, True)
    with pytest.raises(Conflict):
        await accounts.create_user("ann", None)
    bob = await accounts.create_user("bob", None)  # the failed insert left the store usable
    assert [u.name for u in await accounts.list_users()] == ["ann", "bob"]
    assert await accounts.get_user(bob.id) == bob
    assert await accounts.user_with_hash("ann") == (ann, "$argon2id$hash")
    assert await accounts.user_with_hash("nobody") is None
    assert await accounts.count_enabled_users() == 2
    assert (await accounts.update_user(bob.id, disabled=True)).disabled
    assert await accounts.count_enabled_users() == 1
    assert await accounts.any_password()


async def test_tokens_are_found_by_their_hash_and_die_with_the_user(accounts: AccountStore) -> None:
    ann = await accounts.create_user("ann", None)
    secret = new_secret("onw_")
    record = await accounts.create_token(ann.id, "laptop", digest(secret))
    assert await accounts.list_tokens(ann.id) == [record]
    assert await accounts.token(digest(secret)) == (ann, record.id, None)
    assert await accounts.token(digest(new_secret("onw_"))) is None

    await accounts.touch_token(record.id)
    found = await accounts.token(digest(secret))
    assert found is not None and found[2] is not None and found[2] >= record.created_at

    await accounts.update_user(ann.id, disabled=True)
    assert await accounts.token(digest(secret)) is None
    await accounts.update_user(ann.id, disabled=False)
    assert await accounts.delete_token(ann.id, record.id)
    assert not await accounts.delete_token(ann.id, record.id)
    assert await accounts.token(digest(secret)) is None


async def test_sessions_live_until_they_expire(accounts: AccountStore) -> None:
    ann = await accounts.create_user("ann", None)
    await accounts.create_session(ann.id, "a" * 64, "csrf", ttl_s=3600)
    await accounts.create_session(ann.id, "b" * 64, "csrf", ttl_s=-1)
    live = await accounts.session("a" * 64)
    assert live is not None and (live.account, live.csrf_token) == (ann, "csrf")
    assert await accounts.session("b" * 64) is None
    await accounts.purge_expired()
    await accounts.delete_user_sessions(ann.id)
    assert await accounts.session("a" * 64) is None


async def test_a_login_link_is_consumed_once(accounts: AccountStore) -> None:
    ann = await accounts.create_user("ann", None)
    await accounts.create_login_token(ann.id, digest("link"), ttl_s=600)
    assert await accounts.consume_login_token(digest("link")) == ann.id
    assert await accounts.consume_login_token(digest("link")) is None
    assert await accounts.consume_login_token(digest("never issued")) is None

    await accounts.create_login_token(ann.id, digest("expired"), ttl_s=-1)
    assert await accounts.consume_login_token(digest("expired")) is None

    # Two requests presenting the same link at once: exactly one gets in.
    for i in range(10):
        await accounts.create_login_token(ann.id, digest(f"race {i}"), ttl_s=600)
        results = await asyncio.gather(*(accounts.consume_login_token(digest(f"race {i}")) for _ in range(3)))
        assert sorted(results, key=str) == sorted([ann.id, None, None], key=str)
