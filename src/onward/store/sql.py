"""The Store over SQLAlchemy's async engine: SQLite (WAL) in embedded mode, Postgres by URL.

SQLite allows one writer at a time, so every write transaction in this process takes one asyncio
lock instead of racing for the file lock; readers use their own pooled connections (WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from onward.core.events import Event
from onward.core.messages import Message, ToolCall
from onward.core.runs import ACTIVE_STATUSES, Run, RunStatus
from onward.errors import Conflict, ConversationBusy, NotFound
from onward.ids import new_id
from onward.store.base import StaleTransition, WriteBatch
from onward.store.migrations import migrate
from onward.store.schema import conversations, messages, run_events, runs, users

log = logging.getLogger(__name__)

_ACTIVE = [s.value for s in ACTIVE_STATUSES]


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _run(row: Row[Any]) -> Run:
    m = row._mapping
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


def _conversation(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "title": m["title"],
        "created_at": datetime.fromtimestamp(m["created_at"], UTC).isoformat(),
        "updated_at": datetime.fromtimestamp(m["updated_at"], UTC).isoformat(),
    }


def _message(row: Row[Any]) -> Message:
    m = row._mapping
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


def _message_row(conversation_id: str, position: int, msg: Message) -> dict[str, Any]:
    return {
        "id": msg.id or new_id("msg"),
        "conversation_id": conversation_id,
        "position": position,
        "role": msg.role,
        "content": msg.content,
        "tool_calls": json.dumps([c.to_openai() for c in msg.tool_calls]) if msg.tool_calls else None,
        "tool_call_id": msg.tool_call_id,
        "reasoning": msg.reasoning,
        "run_id": msg.run_id,
        "meta": json.dumps(msg.meta) if msg.meta else None,
        "created_at": time.time(),
    }


class SqlStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._write_lock = asyncio.Lock()
        self._driver_sql = _event_sql(self.engine.dialect.paramstyle)

    async def init(self) -> None:
        await migrate(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        if self.is_sqlite:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    # users -----------------------------------------------------------------

    async def ensure_user(self, name: str) -> str:
        async with self.engine.connect() as conn:
            found = (await conn.execute(select(users.c.id).where(users.c.name == name))).scalar()
        if found:
            return str(found)
        user_id = new_id("usr")
        try:
            async with self._writing() as conn:
                await conn.execute(insert(users).values(id=user_id, name=name, created_at=time.time()))
        except IntegrityError:
            return await self.ensure_user(name)
        return user_id

    # conversations ---------------------------------------------------------

    async def create_conversation(self, user_id: str, title: str) -> dict[str, Any]:
        now = time.time()
        cid = new_id("conv")
        async with self._writing() as conn:
            await conn.execute(
                insert(conversations).values(id=cid, user_id=user_id, title=title, created_at=now, updated_at=now)
            )
        return await self.get_conversation(user_id, cid)

    async def list_conversations(self, user_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first, each with `active_run_id` (at most one: the partial unique index)."""
        active = and_(runs.c.conversation_id == conversations.c.id, runs.c.status.in_(_ACTIVE))
        q = (
            select(conversations, runs.c.id.label("active_run_id"))
            .select_from(conversations.outerjoin(runs, active))
            .where(conversations.c.user_id == user_id)
            .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [{**_conversation(r), "active_run_id": r._mapping["active_run_id"]} for r in await conn.execute(q)]

    async def get_conversation(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        q = select(conversations).where(
            and_(conversations.c.id == conversation_id, conversations.c.user_id == user_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            raise NotFound(f"no conversation {conversation_id!r}")
        return _conversation(row)

    async def update_conversation(self, user_id: str, conversation_id: str, title: str) -> dict[str, Any]:
        async with self._writing() as conn:
            res = await conn.execute(
                update(conversations)
                .where(and_(conversations.c.id == conversation_id, conversations.c.user_id == user_id))
                .values(title=title, updated_at=time.time())
            )
        if res.rowcount == 0:
            raise NotFound(f"no conversation {conversation_id!r}")
        return await self.get_conversation(user_id, conversation_id)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> None:
        await self.get_conversation(user_id, conversation_id)
        if await self.active_run(conversation_id):
            raise Conflict("this conversation has an active run; stop it before deleting the conversation")
        async with self._writing() as conn:
            run_ids = select(runs.c.id).where(runs.c.conversation_id == conversation_id)
            await conn.execute(delete(run_events).where(run_events.c.run_id.in_(run_ids)))
            await conn.execute(delete(runs).where(runs.c.conversation_id == conversation_id))
            await conn.execute(delete(messages).where(messages.c.conversation_id == conversation_id))
            await conn.execute(delete(conversations).where(conversations.c.id == conversation_id))

    async def messages(self, conversation_id: str) -> list[Message]:
        q = select(messages).where(messages.c.conversation_id == conversation_id).order_by(messages.c.position)
        async with self.engine.connect() as conn:
            return [_message(r) for r in await conn.execute(q)]

    # runs --------------------------------------------------------------------

    async def create_run(self, user_id: str, conversation_id: str, text: str, model: str | None) -> Run:
        """Store the user's message and a queued run in one transaction (the caller must own
        the conversation; the one-active-run index makes a second active run a ConversationBusy)."""
        now = time.time()
        run_id = new_id("run")
        try:
            async with self._writing() as conn:
                touched = await conn.execute(
                    update(conversations)
                    .where(and_(conversations.c.id == conversation_id, conversations.c.user_id == user_id))
                    .values(updated_at=now)
                )
                if touched.rowcount != 1:
                    raise NotFound(f"no conversation {conversation_id!r}")
                position = (
                    await conn.execute(
                        select(func.coalesce(func.max(messages.c.position), -1)).where(
                            messages.c.conversation_id == conversation_id
                        )
                    )
                ).scalar_one() + 1
                await conn.execute(
                    insert(runs).values(
                        id=run_id,
                        conversation_id=conversation_id,
                        user_id=user_id,
                        status=RunStatus.QUEUED.value,
                        input=text,
                        model=model,
                        created_at=now,
                        last_seq=0,
                    )
                )
                msg = Message(role="user", content=text, run_id=run_id)
                await conn.execute(insert(messages).values(**_message_row(conversation_id, position, msg)))
        except IntegrityError as exc:
            if "uq_runs_one_active" in str(exc) or "runs.conversation_id" in str(exc):
                raise ConversationBusy() from exc
            raise
        return Run(
            id=run_id,
            conversation_id=conversation_id,
            user_id=user_id,
            status=RunStatus.QUEUED,
            input=text,
            model=model,
            created_at=datetime.fromtimestamp(now, UTC),
        )

    async def get_run(self, run_id: str, user_id: str | None = None) -> Run:
        q = select(runs).where(runs.c.id == run_id)
        if user_id is not None:
            q = q.where(runs.c.user_id == user_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        return _run(row)

    async def list_runs(
        self, user_id: str, active: bool | None = None, limit: int = 100, conversation_id: str | None = None
    ) -> list[Run]:
        q = select(runs).where(runs.c.user_id == user_id)
        if conversation_id is not None:
            q = q.where(runs.c.conversation_id == conversation_id)
        if active is True:
            q = q.where(runs.c.status.in_(_ACTIVE))
        elif active is False:
            q = q.where(runs.c.status.not_in(_ACTIVE))
        q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [_run(r) for r in await conn.execute(q)]

    async def active_run(self, conversation_id: str) -> Run | None:
        q = select(runs).where(and_(runs.c.conversation_id == conversation_id, runs.c.status.in_(_ACTIVE)))
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _run(row) if row else None

    async def runs_with_status(self, statuses: Iterable[RunStatus]) -> list[Run]:
        q = select(runs).where(runs.c.status.in_([s.value for s in statuses])).order_by(runs.c.created_at)
        async with self.engine.connect() as conn:
            return [_run(r) for r in await conn.execute(q)]

    async def request_cancel(self, run_id: str) -> bool:
        """running → cancelling, durably. False if the run was not running."""
        async with self._writing() as conn:
            res = await conn.execute(
                update(runs)
                .where(and_(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value))
                .values(status=RunStatus.CANCELLING.value, cancel_requested_at=time.time())
            )
        return bool(res.rowcount)

    # the write path ----------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        """Commit a batch atomically: conditional changes first, then messages, events, run rows."""
        async with self._writing() as conn:
            for change in batch.changes:
                if change.expect is None:
                    continue
                res = await conn.execute(
                    update(runs)
                    .where(and_(runs.c.id == change.run_id, runs.c.status.in_([s.value for s in change.expect])))
                    .values(**change.values)
                )
                if res.rowcount != 1:
                    raise StaleTransition(change.run_id)
            if batch.messages:
                await conn.execute(
                    insert(messages),
                    [_message_row(m.conversation_id, m.position, m.message) for m in batch.messages],
                )
            if batch.events:
                await self._insert_events(conn, batch)
            for change in batch.changes:
                if change.expect is None and change.values:
                    await conn.execute(update(runs).where(runs.c.id == change.run_id).values(**change.values))

    async def _insert_events(self, conn: AsyncConnection, batch: WriteBatch) -> None:
        """The hottest statement: plain driver SQL, since building parameters through the
        expression layer cost more than the insert itself at tens of thousands of rows a second."""
        last: dict[str, int] = {}
        for e in batch.events:
            last[e.run_id] = e.seq
        if self._driver_sql is None:
            await conn.execute(
                insert(run_events),
                [{"run_id": e.run_id, "seq": e.seq, "type": e.type, "ts": e.ts, "body": e.json} for e in batch.events],
            )
            await conn.execute(
                update(runs).where(runs.c.id == bindparam("rid")).values(last_seq=bindparam("seq")),
                [{"rid": rid, "seq": seq} for rid, seq in last.items()],
            )
            return
        insert_sql, update_sql = self._driver_sql
        await conn.exec_driver_sql(insert_sql, [(e.run_id, e.seq, e.type, e.ts, e.json) for e in batch.events])
        await conn.exec_driver_sql(update_sql, [(seq, rid) for rid, seq in last.items()])

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        q = (
            select(run_events.c.seq, run_events.c.type, run_events.c.ts, run_events.c.body)
            .where(and_(run_events.c.run_id == run_id, run_events.c.seq > after))
            .order_by(run_events.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [Event(run_id=run_id, seq=int(r[0]), type=r[1], ts=r[2], json=r[3]) for r in rows]


def _event_sql(paramstyle: str) -> tuple[str, str] | None:
    """Driver-level SQL for the event insert and last_seq update, for the drivers we ship."""
    if paramstyle == "qmark":
        marks = ["?"] * 5
        seq_mark, id_mark = "?", "?"
    elif paramstyle == "numeric_dollar":
        marks = [f"${i}" for i in range(1, 6)]
        seq_mark, id_mark = "$1", "$2"
    else:
        return None
    return (
        f"INSERT INTO run_events (run_id, seq, type, ts, body) VALUES ({', '.join(marks)})",
        f"UPDATE runs SET last_seq = {seq_mark} WHERE id = {id_mark}",
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
