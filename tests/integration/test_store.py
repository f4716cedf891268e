"""The store on Postgres: migrations, users, conversations, runs and messages, each in a fresh database."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import Column, Connection, Float, MetaData, String, Table, inspect, select, text

from onward.core.messages import Message, ToolCall, validate_history
from onward.core.runs import RunStatus
from onward.errors import Conflict, ConversationBusy, NotFound
from onward.store.accounts import AccountStore
from onward.store.base import RunChange, StoredMessage, WriteBatch
from onward.store.db import Database
from onward.store.migrations import LATEST, MIGRATIONS
from onward.store.schema import metadata, schema_migrations
from onward.store.sql import SqlStore
from tests.worlds import World, check_a_mixed_batch

# migrations ------------------------------------------------------------------------------------


def _schema(conn: Connection) -> tuple[set[str], set[str], list[tuple[int, float]]]:
    tables = set(inspect(conn).get_table_names())
    indexes = {i["name"] for i in inspect(conn).get_indexes("runs") if i["name"]}
    versions = conn.execute(
        select(schema_migrations.c.version, schema_migrations.c.applied_at).order_by(schema_migrations.c.version)
    )
    return tables, indexes, [(int(v), float(t)) for v, t in versions]


async def test_a_fresh_database_gets_the_latest_schema_and_a_second_init_applies_nothing(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="onward.store.migrations")
    first = SqlStore(postgres_url)
    try:
        await first.init()
        tables, indexes, versions = await first.db.read(_schema)
    finally:
        await first.close()
    assert tables == set(metadata.tables)
    assert "uq_runs_one_active_per_conversation" in indexes
    assert [v for v, _ in versions] == [m.version for m in MIGRATIONS] and versions[-1][0] == LATEST
    assert [r.getMessage() for r in caplog.records] == [f"created database schema at version {LATEST}"]

    caplog.clear()
    second = SqlStore(postgres_url)
    try:
        await second.init()
        assert await second.db.read(_schema) == (tables, indexes, versions)
    finally:
        await second.close()
    assert caplog.records == []


def _version_1(conn: Connection) -> None:
    """The schema as version 1 shipped it, with a `local` user who has a conversation and a run."""
    md = MetaData()
    Table(
        "users", md,
        Column("id", String(40), primary_key=True),
        Column("name", String(100), nullable=False, unique=True),
        Column("created_at", Float, nullable=False),
    )
    for table in metadata.sorted_tables:
        if table.name not in {"users", "sessions", "api_tokens", "login_tokens"}:
            table.to_metadata(md)
    md.create_all(conn)
    conn.execute(text("INSERT INTO schema_migrations VALUES (1, 'initial schema', 1.0)"))
    conn.execute(text("INSERT INTO users VALUES ('usr_local', 'local', 1.0)"))
    conn.execute(text(
        "INSERT INTO conversations (id, user_id, title, settings, created_at, updated_at)"
        " VALUES ('conv_old', 'usr_local', 'from before accounts', '{}', 1.0, 2.0)"
    ))
    conn.execute(text(
        "INSERT INTO runs (id, conversation_id, user_id, status, input, created_at, last_seq)"
        " VALUES ('run_old', 'conv_old', 'usr_local', 'completed', 'hi', 1.0, 0)"
    ))


async def test_a_version_1_database_is_upgraded_in_place(postgres_url: str) -> None:
    db = Database(postgres_url)
    await db.write(_version_1)
    await db.close()
    store = SqlStore(postgres_url)
    try:
        await store.init()
        [admin] = await AccountStore(store).list_users()
        assert (admin.id, admin.name, admin.is_admin, admin.disabled, admin.has_password) == (
            "usr_local", "admin", True, False, False
        )
        assert [c["id"] for c in await store.list_conversations("usr_local")] == ["conv_old"]
        assert (await store.get_run("run_old", "usr_local")).status is RunStatus.COMPLETED
        _, _, versions = await store.db.read(_schema)
        assert [v for v, _ in versions] == list(range(1, LATEST + 1))
    finally:
        await store.close()


# users, conversations, runs --------------------------------------------------------------------


async def test_conversations_and_runs_belong_to_their_user(world: World) -> None:
    store, ann, conv = world.store, world.user, world.conversation
    assert await store.ensure_user("ann") == ann
    bob = await store.ensure_user("bob")
    assert bob != ann

    run = await store.create_run(ann, conv, "hello", "model-x")
    assert (run.status, run.last_seq, run.model, run.conversation_id) == (RunStatus.QUEUED, 0, "model-x", conv)
    with pytest.raises(ConversationBusy):
        await store.create_run(ann, conv, "again", None)
    assert [m.content for m in await store.messages(conv)] == ["hello"]  # the busy attempt wrote nothing

    assert await store.get_run(run.id, ann) == run
    assert await store.get_run(run.id) == run
    with pytest.raises(NotFound):
        await store.get_run(run.id, bob)
    with pytest.raises(NotFound):
        await store.get_conversation(bob, conv)
    with pytest.raises(NotFound):
        await store.create_run(bob, conv, "not yours", None)

    [listed] = await store.list_conversations(ann)
    assert (listed["id"], listed["title"], listed["active_run_id"]) == (conv, "first", run.id)
    assert await store.list_conversations(bob) == []
    assert [r.id for r in await store.list_runs(ann, active=True)] == [run.id]
    assert await store.list_runs(bob) == []
    assert (await store.active_run(conv)) == run
    with pytest.raises(Conflict):
        await store.delete_conversation(ann, conv)

    await store.write(WriteBatch(changes=[RunChange(run.id, {"status": "completed", "finished_at": time.time()})]))
    [listed] = await store.list_conversations(ann)
    assert listed["active_run_id"] is None
    assert await store.list_runs(ann, active=True) == []
    assert await store.active_run(conv) is None

    second = await store.create_run(ann, conv, "next", None)  # a finished run does not block the next
    assert [m.content for m in await store.messages(conv)] == ["hello", "next"]
    assert [r.id for r in await store.list_runs(ann, conversation_id=conv)] == [second.id, run.id]
    assert [r.id for r in await store.runs_with_status([RunStatus.QUEUED])] == [second.id]


async def test_conversations_are_listed_newest_first_and_deleted_with_their_runs(world: World) -> None:
    store, ann = world.store, world.user
    older = world.conversation
    newer = (await store.create_conversation(ann, "second"))["id"]
    assert [c["id"] for c in await store.list_conversations(ann)] == [newer, older]
    renamed = await store.update_conversation(ann, older, "renamed")
    assert renamed["title"] == "renamed"
    assert [c["id"] for c in await store.list_conversations(ann)] == [older, newer]

    run = await store.create_run(ann, older, "hi", None)
    assert await world.journal.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "cancelled"})
    await store.delete_conversation(ann, older)
    assert [c["id"] for c in await store.list_conversations(ann)] == [newer]
    with pytest.raises(NotFound):
        await store.get_run(run.id)
    assert await store.messages(older) == []


async def test_request_cancel_only_moves_a_running_run(world: World) -> None:
    run = await world.store.create_run(world.user, world.conversation, "hi", None)
    assert not await world.store.request_cancel(run.id)  # still queued
    assert await world.journal.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "running"})
    assert await world.store.request_cancel(run.id)
    assert not await world.store.request_cancel(run.id)  # idempotent: already cancelling
    assert (await world.store.get_run(run.id)).status is RunStatus.CANCELLING


# messages ------------------------------------------------------------------------------------


async def test_messages_with_tool_calls_round_trip(world: World) -> None:
    store, conv = world.store, world.conversation
    run = await store.create_run(world.user, conv, "list the files, ünïcødé ✓ 中文", None)
    calls = (
        ToolCall("call_1", "run_command", '{"command": "ls -la"}'),
        ToolCall("call_2", "read_file", '{"path": "a \\"quoted\\" name.txt"}'),
    )
    written = [
        Message(role="assistant", content=None, tool_calls=calls, reasoning="let me look", id="msg_a1",
                run_id=run.id, meta={"usage": {"prompt_tokens": 12}}),
        Message(role="tool", content="total 0\n", tool_call_id="call_1", id="msg_t1", run_id=run.id),
        Message(role="tool", content="", tool_call_id="call_2", id="msg_t2", run_id=run.id),
        Message(role="assistant", content="Nothing there.", id="msg_a2", run_id=run.id),
    ]
    batch = WriteBatch(messages=[StoredMessage(conv, i + 1, m) for i, m in enumerate(written)])
    await store.write(batch)

    stored = await store.messages(conv)
    assert stored[0].role == "user" and stored[0].content == "list the files, ünïcødé ✓ 中文"
    assert stored[0].run_id == run.id
    assert stored[1:] == written
    validate_history([m.to_openai() for m in stored] + [{"role": "user", "content": "and now?"}])


async def test_a_batchs_messages_and_run_changes_are_stored_as_if_one_after_another(world: World) -> None:
    await check_a_mixed_batch(world)


async def test_nul_characters_are_stored_as_replacement_characters(world: World) -> None:
    """Postgres text cannot hold NUL, which a command's output can (`printf 'a\\0b'`). A batch
    carrying one must not fail: the journal would retry it forever, stalling every run it writes."""
    store, conv = world.store, world.conversation
    run = await store.create_run(world.user, conv, "nul\x00input", None)
    assert run.input == "nul\ufffdinput"
    assert await world.journal.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "running"})
    call = ToolCall("call_1", "run_command", '{"command": "printf \'a\\\\0b\'"}')
    messages = [
        Message(role="assistant", tool_calls=(call,), id="msg_a", run_id=run.id),
        Message(role="tool", content="a\x00b", tool_call_id="call_1", id="msg_t", run_id=run.id),
    ]
    stored = [StoredMessage(conv, 1 + i, m) for i, m in enumerate(messages)]
    await asyncio.wait_for(world.journal.commit(run.id, messages=stored, change={"error": "e\x00"}), 10)
    history = await store.messages(conv)
    assert [m.content for m in history] == ["nul\ufffdinput", None, "a\ufffdb"]
    assert history[1].tool_calls == (call,)
    assert (await store.get_run(run.id)).error == "e\ufffd"
    assert (await store.create_conversation(world.user, "t\x00"))["title"] == "t\ufffd"
