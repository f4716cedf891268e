"""A database made by the core (schema version 1, one `local` user) upgrades to accounts: `local`
becomes the admin and keeps its conversations and runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Column, Float, MetaData, String, Table

from onward.accounts.service import AccountService
from onward.config import Settings
from onward.store.accounts import AccountStore
from onward.store.migrations import LATEST
from onward.store.schema import metadata
from onward.store.sql import SqlStore

ACCOUNT_TABLES = {"sessions", "api_tokens", "login_tokens"}


def version_1(path: Path) -> None:
    """The schema as version 1 shipped it, with a user, a conversation, a message and a run."""
    from sqlalchemy import create_engine

    md = MetaData()
    Table("users", md, Column("id", String(40), primary_key=True), Column("name", String(100), nullable=False, unique=True),
          Column("created_at", Float, nullable=False))
    for table in metadata.sorted_tables:
        if table.name not in ACCOUNT_TABLES | {"users"}:
            table.to_metadata(md)
    engine = create_engine(f"sqlite:///{path}")
    md.create_all(engine)
    engine.dispose()
    db = sqlite3.connect(path)
    db.executescript(
        """
        INSERT INTO schema_migrations VALUES (1, 'initial schema', 1.0);
        INSERT INTO users VALUES ('usr_local', 'local', 1.0);
        INSERT INTO conversations (id, user_id, title, settings, created_at, updated_at)
            VALUES ('conv_old', 'usr_local', 'from before accounts', '{}', 1.0, 2.0);
        INSERT INTO messages (id, conversation_id, position, role, content, created_at)
            VALUES ('msg_old', 'conv_old', 0, 'user', 'hello from v1', 1.0);
        INSERT INTO runs (id, conversation_id, user_id, status, input, created_at, last_seq)
            VALUES ('run_old', 'conv_old', 'usr_local', 'completed', 'hello from v1', 1.0, 0);
        """
    )
    db.commit()
    db.close()


async def test_a_version_1_database_upgrades_and_local_becomes_admin(tmp_path: Path) -> None:
    path = tmp_path / "onward.db"
    version_1(path)
    store = SqlStore(f"sqlite:///{path}")
    await store.init()
    accounts = AccountStore(store)
    try:
        [admin] = await accounts.list_users()
        assert (admin.id, admin.name, admin.is_admin, admin.disabled, admin.has_password) == ("usr_local", "admin", True, False, False)
        assert [c["id"] for c in await store.list_conversations("usr_local")] == ["conv_old"]
        assert [m.content for m in await store.messages("conv_old")] == ["hello from v1"]
        assert (await store.get_run("run_old", "usr_local")).status.value == "completed"
        # the new tables work
        service = AccountService(Settings(home=tmp_path), accounts)
        _, token = await service.create_token("usr_local", "after the upgrade")
        assert (await service.by_token(token)) == admin
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert [v for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY version")] == list(range(1, LATEST + 1))
    db.close()
    again = SqlStore(f"sqlite:///{path}")  # a second start applies nothing
    await again.init()
    assert [u.name for u in await AccountStore(again).list_users()] == ["admin"]
    await again.close()


async def test_a_fresh_database_is_created_at_the_latest_version(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    await store.init()
    accounts = AccountStore(store)
    user = await accounts.create_user("solo", None)
    assert user.is_admin is False and user.disabled is False and not await accounts.any_password()
    await store.close()


async def test_an_old_aiosqlite_url_still_opens_the_database(tmp_path: Path) -> None:
    """The default URL used to name the aiosqlite driver; SQLite now always runs on sqlite3."""
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    await store.init()
    user = await store.ensure_user("someone")
    assert (await store.create_conversation(user, "t"))["title"] == "t"
    await store.close()
