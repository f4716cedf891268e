"""The Store over SQLAlchemy Core: SQLite (WAL) in embedded mode, Postgres by URL.

Every operation is a synchronous function of a Connection (the `_op` functions below) that
`Database` runs in one hop: SQLite writes on its one writer thread, reads beside it, Postgres
through the async engine. The coroutine methods of SqlStore only choose read or write.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    TextClause,
    and_,
    bindparam,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from onward.core.events import Event
from onward.core.messages import Message, ToolCall
from onward.core.runs import ACTIVE_STATUSES, Run, RunStatus
from onward.errors import Conflict, ConversationBusy, NotFound
from onward.ids import new_id
from onward.store.base import RunChange, StaleTransition, StoredMessage, WriteBatch, WriteOutcome
from onward.store.db import Database
from onward.store.migrations import migrate
from onward.store.schema import conversations, messages, run_events, runs, users
from onward.store.statements import (
    Row,
    execute,
    execute_driver_sql,
    execute_many,
    fetch_all,
    fetch_one,
    fetch_value,
)

log = logging.getLogger(__name__)

_ACTIVE = [s.value for s in ACTIVE_STATUSES]
# A read asking for more rows than this goes to a reader thread (Database.scan): a page of events
# read on the loop's thread holds it for at most a few ms (~6 ms for 500 rows of 8 KB). A history
# (`messages`) is read whole on the loop: the loop then encodes all of it for the LLM anyway.
SCAN_ABOVE_ROWS = 500

# The statements of the hot paths (every run start, stream, replay, claim) as text, compiled once:
# building a select() or insert() and its cache key cost ~3x the execution itself (230 vs 65 µs).
_RUN_BY_ID = text("SELECT * FROM runs WHERE id = :id")
_RUN_BY_ID_AND_USER = text("SELECT * FROM runs WHERE id = :id AND user_id = :user_id")
_EVENTS_AFTER = text(
    "SELECT seq, type, ts, body FROM run_events WHERE run_id = :run_id AND seq > :after ORDER BY seq LIMIT :limit"
)
_MESSAGES = text("SELECT * FROM messages WHERE conversation_id = :cid ORDER BY position")
_TOUCH_CONVERSATION = text("UPDATE conversations SET updated_at = :now WHERE id = :cid AND user_id = :user_id")
_NEXT_POSITION = text("SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id = :cid")
_INSERT_RUN = text(
    "INSERT INTO runs (id, conversation_id, user_id, status, input, model, created_at, last_seq) "
    "VALUES (:id, :cid, :user_id, :status, :input, :model, :now, 0)"
)
_MESSAGE_COLUMNS = (
    "id", "conversation_id", "position", "role", "content", "tool_calls", "tool_call_id", "reasoning", "run_id",
    "meta", "created_at",
)
_INSERT_MESSAGE = text(
    f"INSERT INTO messages ({', '.join(_MESSAGE_COLUMNS)}) VALUES ({', '.join(':' + c for c in _MESSAGE_COLUMNS)})"
)
_INSERT_MESSAGES_JSON = (  # SQLite: a batch's messages from one JSON array of rows, in order
    f"INSERT INTO messages ({', '.join(_MESSAGE_COLUMNS)}) "
    f"SELECT {', '.join(f'j.value->>{i}' for i in range(len(_MESSAGE_COLUMNS)))} FROM json_each(?) AS j"
)
_run_updates: dict[tuple[tuple[str, ...], int], TextClause] = {}


def _run_update(columns: tuple[str, ...], expected: int) -> TextClause:
    """UPDATE runs SET the given columns WHERE id matches (and, with `expected` > 0, the status is
    one of that many values), compiled once per shape."""
    key = (columns, expected)
    stmt = _run_updates.get(key)
    if stmt is None:
        unknown = [c for c in columns if c not in runs.c]
        if unknown:
            raise ValueError(f"runs has no column {unknown[0]!r}")
        sets = ", ".join(f"{c} = :v_{c}" for c in columns)
        where = "id = :run_id"
        if expected:
            where += f" AND status IN ({', '.join(f':s{i}' for i in range(expected))})"
        stmt = _run_updates[key] = text(f"UPDATE runs SET {sets} WHERE {where}")
    return stmt


@functools.cache
def _run_update_json(columns: tuple[str, ...]) -> str:
    """UPDATE runs SET the given columns of every run in a JSON array of [id, value, ...] rows
    (SQLite: one statement for a batch's changes, instead of one per run, each of which had
    to win back the GIL from the event loop's thread)."""
    unknown = [c for c in columns if c not in runs.c]
    if unknown:
        raise ValueError(f"runs has no column {unknown[0]!r}")
    sets = ", ".join(f"{c} = j.value->>{i}" for i, c in enumerate(columns, start=1))
    return f"UPDATE runs SET {sets} FROM json_each(?) AS j WHERE runs.id = j.value->>0"


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _run(m: Row) -> Run:
    """A Run from a row of `runs` (by column name)."""
    return Run(
        id=m["id"],
        conversation_id=m["conversation_id"],
        user_id=m["user_id"],
        status=RunStatus(m["status"]),
        input=m["input"],
        model=m["model"],
        created_at=datetime.fromtimestamp(m["created_at"], UTC),
        started_at=_dt(m["started_at"]),
        finished_at=_dt(m["finished_at"]),
        last_seq=int(m["last_seq"]),
        error=m["error"],
        usage=json.loads(m["usage"]) if m["usage"] else None,
    )


def _conversation(m: Row) -> dict[str, Any]:
    return {
        "id": m["id"],
        "title": m["title"],
        "created_at": datetime.fromtimestamp(m["created_at"], UTC).isoformat(),
        "updated_at": datetime.fromtimestamp(m["updated_at"], UTC).isoformat(),
    }


def _message(m: Row) -> Message:
    calls = tuple(ToolCall.from_openai(c) for c in json.loads(m["tool_calls"])) if m["tool_calls"] else ()
    return Message(
        role=m["role"],
        content=m["content"],
        tool_calls=calls,
        tool_call_id=m["tool_call_id"],
        reasoning=m["reasoning"],
        id=m["id"],
        run_id=m["run_id"],
        meta=json.loads(m["meta"]) if m["meta"] else {},
    )


def _text(value: str) -> str:
    """Postgres text cannot hold NUL, which command output and user input can: a batch carrying
    one would fail, and the journal retry it forever. Both databases store U+FFFD instead."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _opt_text(value: str | None) -> str | None:
    return _text(value) if value is not None else None


def _message_row(conversation_id: str, position: int, msg: Message) -> dict[str, Any]:
    return {
        "id": msg.id or new_id("msg"),
        "conversation_id": conversation_id,
        "position": position,
        "role": msg.role,
        "content": _opt_text(msg.content),
        "tool_calls": json.dumps([c.to_openai() for c in msg.tool_calls]) if msg.tool_calls else None,
        "tool_call_id": _opt_text(msg.tool_call_id),
        "reasoning": _opt_text(msg.reasoning),
        "run_id": msg.run_id,
        "meta": json.dumps(msg.meta) if msg.meta else None,
        "created_at": time.time(),
    }


class SqlStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(url)
        self._event_sql = _event_sql(self.db.paramstyle, self.db.is_sqlite)

    async def init(self) -> None:
        await migrate(self.db)

    async def close(self) -> None:
        await self.db.close()

    # users -----------------------------------------------------------------

    async def ensure_user(self, name: str) -> str:
        found = await self.db.read(_user_id, name)
        if found:
            return found
        try:
            return await self.db.write(_insert_user, name)
        except IntegrityError:
            return await self.ensure_user(name)

    # conversations ---------------------------------------------------------

    async def create_conversation(self, user_id: str, title: str) -> dict[str, Any]:
        return await self.db.write(_create_conversation, user_id, title)

    async def list_conversations(self, user_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first, each with `active_run_id` (at most one: the partial unique index)."""
        return await self.db.read(_list_conversations, user_id, limit)

    async def get_conversation(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        return await self.db.read(_get_conversation, user_id, conversation_id)

    async def update_conversation(self, user_id: str, conversation_id: str, title: str) -> dict[str, Any]:
        return await self.db.write(_update_conversation, user_id, conversation_id, title)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> None:
        await self.db.write(_delete_conversation, user_id, conversation_id)

    async def messages(self, conversation_id: str) -> list[Message]:
        return await self.db.read(_messages, conversation_id)

    # runs --------------------------------------------------------------------

    async def create_run(self, user_id: str, conversation_id: str, text: str, model: str | None) -> Run:
        """Store the user's message and a queued run in one transaction (the caller must own
        the conversation; the one-active-run index makes a second active run a ConversationBusy)."""
        try:
            return await self.db.write(_create_run, user_id, conversation_id, text, model)
        except IntegrityError as exc:
            if "uq_runs_one_active" in str(exc) or "runs.conversation_id" in str(exc):
                raise ConversationBusy() from exc
            raise

    async def get_run(self, run_id: str, user_id: str | None = None) -> Run:
        return await self.db.read(_get_run, run_id, user_id)

    async def list_runs(
        self, user_id: str, active: bool | None = None, limit: int = 100, conversation_id: str | None = None
    ) -> list[Run]:
        return await self.db.read(_list_runs, user_id, active, limit, conversation_id)

    async def active_run(self, conversation_id: str) -> Run | None:
        return await self.db.read(_active_run, conversation_id)

    async def runs_with_status(self, statuses: Iterable[RunStatus]) -> list[Run]:
        return await self.db.scan(_runs_with_status, [s.value for s in statuses])

    async def request_cancel(self, run_id: str) -> bool:
        """running → cancelling, durably. False if the run was not running."""
        return await self.db.write(_request_cancel, run_id)

    # the write path ----------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        """Commit a batch atomically: conditional changes first, then messages, events, run rows.
        (The journal's transitions: a claim, the cancel of a queued run, recovery. They queue with
        the other writes; only the journal's group commits, `write_soon`, go ahead of them.)"""
        await self.db.write(_write_batch, batch, self._event_sql)

    def write_soon(self, batch: WriteBatch, done: Callable[[BaseException | None], None]) -> WriteOutcome:
        """`write`, reporting to `done` (on this loop) instead of to an awaiting task."""
        return self.db.write_soon(done, _write_batch, batch, self._event_sql)

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        read = self.db.scan if limit > SCAN_ABOVE_ROWS else self.db.read
        return await read(_events, run_id, after, limit)


# The operations: each runs on one connection (inside a transaction when written through `write`).


def _user_id(conn: Connection, name: str) -> str | None:
    found = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
    return str(found) if found else None


def _insert_user(conn: Connection, name: str) -> str:
    user_id = new_id("usr")
    conn.execute(insert(users).values(id=user_id, name=name, created_at=time.time()))
    return user_id


def _create_conversation(conn: Connection, user_id: str, title: str) -> dict[str, Any]:
    now = time.time()
    cid = new_id("conv")
    conn.execute(
        insert(conversations).values(id=cid, user_id=user_id, title=_text(title), created_at=now, updated_at=now)
    )
    return _get_conversation(conn, user_id, cid)


def _list_conversations(conn: Connection, user_id: str, limit: int) -> list[dict[str, Any]]:
    active = and_(runs.c.conversation_id == conversations.c.id, runs.c.status.in_(_ACTIVE))
    q = (
        select(conversations, runs.c.id.label("active_run_id"))
        .select_from(conversations.outerjoin(runs, active))
        .where(conversations.c.user_id == user_id)
        .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
        .limit(limit)
    )
    return [{**_conversation(r._mapping), "active_run_id": r._mapping["active_run_id"]} for r in conn.execute(q)]


def _get_conversation(conn: Connection, user_id: str, conversation_id: str) -> dict[str, Any]:
    q = select(conversations).where(and_(conversations.c.id == conversation_id, conversations.c.user_id == user_id))
    row = conn.execute(q).first()
    if row is None:
        raise NotFound(f"no conversation {conversation_id!r}")
    return _conversation(row._mapping)


def _update_conversation(conn: Connection, user_id: str, conversation_id: str, title: str) -> dict[str, Any]:
    res = conn.execute(
        update(conversations)
        .where(and_(conversations.c.id == conversation_id, conversations.c.user_id == user_id))
        .values(title=_text(title), updated_at=time.time())
    )
    if res.rowcount == 0:
        raise NotFound(f"no conversation {conversation_id!r}")
    return _get_conversation(conn, user_id, conversation_id)


def _delete_conversation(conn: Connection, user_id: str, conversation_id: str) -> None:
    _get_conversation(conn, user_id, conversation_id)
    if _active_run(conn, conversation_id):
        raise Conflict("this conversation has an active run; stop it before deleting the conversation")
    run_ids = select(runs.c.id).where(runs.c.conversation_id == conversation_id)
    conn.execute(delete(run_events).where(run_events.c.run_id.in_(run_ids)))
    conn.execute(delete(runs).where(runs.c.conversation_id == conversation_id))
    conn.execute(delete(messages).where(messages.c.conversation_id == conversation_id))
    conn.execute(delete(conversations).where(conversations.c.id == conversation_id))


def _messages(conn: Connection, conversation_id: str) -> list[Message]:
    return [_message(r) for r in fetch_all(conn, _MESSAGES, {"cid": conversation_id})]


def _create_run(conn: Connection, user_id: str, conversation_id: str, text: str, model: str | None) -> Run:
    now = time.time()
    run_id = new_id("run")
    text = _text(text)
    ids = {"cid": conversation_id, "user_id": user_id}
    if execute(conn, _TOUCH_CONVERSATION, {**ids, "now": now}) != 1:
        raise NotFound(f"no conversation {conversation_id!r}")
    position = int(fetch_value(conn, _NEXT_POSITION, ids))
    status = RunStatus.QUEUED
    execute(conn, _INSERT_RUN, {**ids, "id": run_id, "status": status.value, "input": text, "model": model, "now": now})
    msg = Message(role="user", content=text, run_id=run_id)
    execute(conn, _INSERT_MESSAGE, _message_row(conversation_id, position, msg))
    return Run(
        id=run_id,
        conversation_id=conversation_id,
        user_id=user_id,
        status=status,
        input=text,
        model=model,
        created_at=datetime.fromtimestamp(now, UTC),
    )


def _get_run(conn: Connection, run_id: str, user_id: str | None) -> Run:
    if user_id is None:
        row = fetch_one(conn, _RUN_BY_ID, {"id": run_id})
    else:
        row = fetch_one(conn, _RUN_BY_ID_AND_USER, {"id": run_id, "user_id": user_id})
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    return _run(row)


def _list_runs(
    conn: Connection, user_id: str, active: bool | None, limit: int, conversation_id: str | None
) -> list[Run]:
    q = select(runs).where(runs.c.user_id == user_id)
    if conversation_id is not None:
        q = q.where(runs.c.conversation_id == conversation_id)
    if active is True:
        q = q.where(runs.c.status.in_(_ACTIVE))
    elif active is False:
        q = q.where(runs.c.status.not_in(_ACTIVE))
    q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
    return [_run(r._mapping) for r in conn.execute(q)]


def _active_run(conn: Connection, conversation_id: str) -> Run | None:
    q = select(runs).where(and_(runs.c.conversation_id == conversation_id, runs.c.status.in_(_ACTIVE)))
    row = conn.execute(q).first()
    return _run(row._mapping) if row else None


def _runs_with_status(conn: Connection, statuses: list[str]) -> list[Run]:
    q = select(runs).where(runs.c.status.in_(statuses)).order_by(runs.c.created_at)
    return [_run(r._mapping) for r in conn.execute(q)]


def _request_cancel(conn: Connection, run_id: str) -> bool:
    res = conn.execute(
        update(runs)
        .where(and_(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value))
        .values(status=RunStatus.CANCELLING.value, cancel_requested_at=time.time())
    )
    return bool(res.rowcount)


def _write_batch(conn: Connection, batch: WriteBatch, event_sql: EventSql | None) -> None:
    for change in batch.changes:
        if change.expect is None:
            continue
        expected = sorted(s.value for s in change.expect)
        params = _set_params(change.values)
        params.update({f"s{i}": v for i, v in enumerate(expected)}, run_id=change.run_id)
        if execute(conn, _run_update(tuple(change.values), len(expected)), params) != 1:
            raise StaleTransition(change.run_id)
    if batch.messages:
        _insert_messages(conn, batch.messages, event_sql)
    if batch.events:
        _insert_events(conn, batch.events, event_sql)
    changes = [c for c in batch.changes if c.expect is None and c.values]
    if changes:
        _update_runs(conn, changes, event_sql)


def _insert_messages(conn: Connection, messages: list[StoredMessage], event_sql: EventSql | None) -> None:
    rows = [_message_row(m.conversation_id, m.position, m.message) for m in messages]
    if event_sql is not None and event_sql.sqlite:
        values = [[row[c] for c in _MESSAGE_COLUMNS] for row in rows]
        execute_driver_sql(conn, _INSERT_MESSAGES_JSON, (orjson.dumps(values).decode(),))
        return
    execute_many(conn, _INSERT_MESSAGE, rows)


def _update_runs(conn: Connection, changes: list[RunChange], event_sql: EventSql | None) -> None:
    """Unconditional run changes, in order. SQLite: one statement per set of columns (a run's
    changes merged: later values win, as if applied one after another)."""
    if event_sql is None or not event_sql.sqlite:
        for change in changes:
            params = _set_params(change.values)
            execute(conn, _run_update(tuple(change.values), 0), {**params, "run_id": change.run_id})
        return
    merged: dict[str, dict[str, Any]] = {}
    for change in changes:
        merged.setdefault(change.run_id, {}).update(change.values)
    shapes: dict[tuple[str, ...], list[list[Any]]] = {}
    for run_id, values in merged.items():
        shapes.setdefault(tuple(values), []).append([run_id, *_set_params(values).values()])
    for columns, rows in shapes.items():
        execute_driver_sql(conn, _run_update_json(columns), (orjson.dumps(rows).decode(),))


def _set_params(values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `_run_update`'s SET clause (text such as `error` without NUL)."""
    return {f"v_{k}": _text(v) if isinstance(v, str) else v for k, v in values.items()}


@dataclass(frozen=True, slots=True)
class EventSql:
    """Driver-level SQL for the event insert and the runs' last_seq update.

    `sqlite` (SQLite with JSON built in): events go in as rows of VALUES, up to 1,024 per statement, bound
    directly. `sqlite3` releases the GIL around every row's step of an executemany and must win
    it back for the next row; while the event loop keeps the GIL busy each of those waits can
    take up to the interpreter's switch interval, so a batch of 30,000 events took half a second
    to write that way. One JSON parameter per batch (`json_each`) made it one statement, but
    SQLite then parsed each row's JSON once per column: 5.6 µs of CPU per event against 3.8 for
    bound VALUES (micro-benchmark, 2,000 events per commit). The last statement of a batch is
    padded with NULL rows, which its WHERE drops, up to one of four sizes, so that four prepared
    statements serve every batch. The update takes the runs' last seqs as one JSON parameter, and
    a batch's messages and unconditional run changes go in the same way, one statement each.
    """

    insert: str  # one row, executed once per event — unless `sqlite`
    update: str
    sqlite: bool = False


PADDED_SIZES = (16, 64, 256, 1024)  # rows per padded insert; 1,024 x 5 parameters < SQLite's 32,766


@functools.cache
def _padded_insert(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?)"] * rows)
    return (
        "INSERT INTO run_events (run_id, seq, type, ts, body) "
        f"SELECT * FROM (VALUES {values}) WHERE column1 IS NOT NULL"
    )


def _insert_events(conn: Connection, events: list[Event], event_sql: EventSql | None) -> None:
    """The hottest statement: plain driver SQL, since building parameters through the
    expression layer cost more than the insert itself at tens of thousands of rows a second."""
    last: dict[str, int] = {}
    for e in events:
        last[e.run_id] = e.seq
    if event_sql is None:
        conn.execute(
            insert(run_events),
            [{"run_id": e.run_id, "seq": e.seq, "type": e.type, "ts": e.ts, "body": e.json} for e in events],
        )
        conn.execute(
            update(runs).where(runs.c.id == bindparam("rid")).values(last_seq=bindparam("seq")),
            [{"rid": rid, "seq": seq} for rid, seq in last.items()],
        )
        return
    if event_sql.sqlite:
        most = PADDED_SIZES[-1]
        for start in range(0, len(events), most):
            part = events[start : start + most]
            size = next(n for n in PADDED_SIZES if n >= len(part))
            params: list[object] = [value for e in part for value in (e.run_id, e.seq, e.type, e.ts, e.json)]
            params += [None] * (5 * (size - len(part)))
            execute_driver_sql(conn, _padded_insert(size), tuple(params))
        execute_driver_sql(conn, event_sql.update, (orjson.dumps(list(last.items())).decode(),))
        return
    execute_driver_sql(conn, event_sql.insert, [(e.run_id, e.seq, e.type, e.ts, e.json) for e in events])
    execute_driver_sql(conn, event_sql.update, [(seq, rid) for rid, seq in last.items()])


def _events(conn: Connection, run_id: str, after: int, limit: int) -> list[Event]:
    rows = fetch_all(conn, _EVENTS_AFTER, {"run_id": run_id, "after": after, "limit": limit})
    return [Event(run_id=run_id, seq=int(r["seq"]), type=r["type"], ts=r["ts"], json=r["body"]) for r in rows]


def _event_sql(paramstyle: str, is_sqlite: bool) -> EventSql | None:
    """The event statements for the drivers we ship (None: through the expression layer)."""
    if is_sqlite and sqlite3.sqlite_version_info >= (3, 38, 0):  # ->> and JSON built in
        return EventSql(
            "INSERT INTO run_events (run_id, seq, type, ts, body) VALUES (?, ?, ?, ?, ?)",
            "UPDATE runs SET last_seq = j.value->>1 FROM json_each(?) AS j WHERE runs.id = j.value->>0",
            sqlite=True,
        )
    if paramstyle == "qmark":
        marks = ["?"] * 5
        seq_mark, id_mark = "?", "?"
    elif paramstyle == "numeric_dollar":
        marks = [f"${i}" for i in range(1, 6)]
        seq_mark, id_mark = "$1", "$2"
    else:
        return None
    return EventSql(
        f"INSERT INTO run_events (run_id, seq, type, ts, body) VALUES ({', '.join(marks)})",
        f"UPDATE runs SET last_seq = {seq_mark} WHERE id = {id_mark}",
    )
