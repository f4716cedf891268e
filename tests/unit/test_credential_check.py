"""An open stream re-checks its caller's credential; a database that fails for a moment keeps the
stream open (it asks again later), a revoked token ends it. The real app and a real SQLite file."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import create_engine
from starlette.requests import HTTPConnection

from onward.api.deps import CredentialCheck, Services, current_user
from onward.app import create_app
from onward.config import Settings


@pytest.fixture
async def services(tmp_path) -> AsyncIterator[Services]:  # type: ignore[no-untyped-def]
    app = create_app(Settings(home=tmp_path, stream_auth_recheck_s=0.000001))
    async with app.router.lifespan_context(app):
        yield app.state.services


def _connection(token: str) -> HTTPConnection:
    headers = [(b"authorization", f"Bearer {token}".encode())]
    return HTTPConnection({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


async def test_a_failing_database_keeps_the_stream_and_a_revoked_token_ends_it(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    account = await services.accounts.add_user("bob", "a-long-enough-password")
    record, token = await services.accounts.create_token(account.id, "script")
    conn = _connection(token)
    check = CredentialCheck(conn, services, await current_user(conn, services))
    assert await check.still_valid()

    # the loop's reads go to a database that cannot be opened (a real failure, not a stand-in)
    db = services.store.db  # type: ignore[attr-defined]
    working, db._inline = db._inline, create_engine("sqlite:////nonexistent-onward-dir/x.db")
    db._held_inline.close()
    db._held_inline._engine = db._inline
    with caplog.at_level(logging.WARNING, logger="onward.api.deps"):
        assert await check.still_valid()  # the database failed: the stream stays
    assert "could not re-check a stream's credential" in caplog.text

    db._held_inline.close()
    db._inline = db._held_inline._engine = working
    await services.accounts.revoke_token(account.id, record.id)
    assert not await check.still_valid()
