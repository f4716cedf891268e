"""Storage of users, sessions, API tokens and one-time login links, over SqlStore's engine.

Writes go through SqlStore's `_writing()`, so SQLite writes stay serialized with the journal's.
Secrets arrive here already hashed: this module never sees a password, session id or token.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from onward.accounts.values import Account, SessionRecord, TokenRecord
from onward.core.runs import ACTIVE_STATUSES, Run
from onward.errors import Conflict, NotFound
from onward.ids import new_id
from onward.store.schema import api_tokens, login_tokens, runs, sessions, users
from onward.store.sql import SqlStore, _run

_ACTIVE = [s.value for s in ACTIVE_STATUSES]
_USER_COLUMNS = (users.c.id, users.c.name, users.c.is_admin, users.c.disabled, users.c.password_hash, users.c.created_at)


def _account(row: Any) -> Account:
    m = row._mapping
    return Account(
        id=m["id"],
        name=m["name"],
        is_admin=bool(m["is_admin"]),
        disabled=bool(m["disabled"]),
        has_password=m["password_hash"] is not None,
        created_at=float(m["created_at"]),
    )


class AccountStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql
        self.engine = sql.engine

    # users -----------------------------------------------------------------------------------

    async def create_user(self, name: str, password_hash: str | None, is_admin: bool = False) -> Account:
        user_id = new_id("usr")
        try:
            async with self.sql._writing() as conn:
                await conn.execute(
                    insert(users).values(
                        id=user_id, name=name, created_at=time.time(), password_hash=password_hash,
                        is_admin=is_admin, disabled=False,
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"a user named {name!r} already exists") from exc
        return await self.get_user(user_id)

    async def get_user(self, user_id: str) -> Account:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*_USER_COLUMNS).where(users.c.id == user_id))).first()
        if row is None:
            raise NotFound(f"no user {user_id!r}")
        return _account(row)

    async def user_with_hash(self, name: str) -> tuple[Account, str | None] | None:
        """The user called `name` and its password hash, for a login; None if there is none."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*_USER_COLUMNS).where(users.c.name == name))).first()
        return (_account(row), row._mapping["password_hash"]) if row else None

    async def list_users(self) -> list[Account]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(*_USER_COLUMNS).order_by(users.c.created_at, users.c.id))
            return [_account(r) for r in rows]

    async def update_user(self, user_id: str, **values: Any) -> Account:
        """Set password_hash, is_admin and/or disabled."""
        async with self.sql._writing() as conn:
            res = await conn.execute(update(users).where(users.c.id == user_id).values(**values))
        if res.rowcount == 0:
            raise NotFound(f"no user {user_id!r}")
        return await self.get_user(user_id)

    async def count_enabled_users(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(users).where(users.c.disabled.is_(False)))).scalar_one())

    async def any_password(self) -> bool:
        async with self.engine.connect() as conn:
            q = select(users.c.id).where(users.c.password_hash.is_not(None)).limit(1)
            return (await conn.execute(q)).first() is not None

    # sessions --------------------------------------------------------------------------------

    async def create_session(self, user_id: str, id_hash: str, csrf_token: str, ttl_s: float) -> None:
        now = time.time()
        async with self.sql._writing() as conn:
            await conn.execute(
                insert(sessions).values(
                    id_hash=id_hash, user_id=user_id, csrf_token=csrf_token,
                    created_at=now, last_seen_at=now, expires_at=now + ttl_s,
                )
            )

    async def session(self, id_hash: str) -> SessionRecord | None:
        """The live session with this id hash, and its (enabled) user; None if there is none."""
        q = (
            select(*_USER_COLUMNS, sessions.c.csrf_token, sessions.c.last_seen_at, sessions.c.expires_at)
            .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
            .where(and_(sessions.c.id_hash == id_hash, sessions.c.expires_at > time.time(), users.c.disabled.is_(False)))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        m = row._mapping
        return SessionRecord(id_hash, _account(row), m["csrf_token"], float(m["last_seen_at"]), float(m["expires_at"]))

    async def touch_session(self, id_hash: str) -> None:
        async with self.sql._writing() as conn:
            await conn.execute(update(sessions).where(sessions.c.id_hash == id_hash).values(last_seen_at=time.time()))

    async def delete_session(self, id_hash: str) -> None:
        async with self.sql._writing() as conn:
            await conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))

    async def delete_user_sessions(self, user_id: str) -> None:
        async with self.sql._writing() as conn:
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))

    async def purge_expired(self) -> None:
        now = time.time()
        async with self.sql._writing() as conn:
            await conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
            await conn.execute(delete(login_tokens).where(login_tokens.c.expires_at <= now))

    # API tokens ------------------------------------------------------------------------------

    async def create_token(self, user_id: str, name: str, token_hash: str) -> TokenRecord:
        record = TokenRecord(new_id("tok"), name, time.time(), None)
        async with self.sql._writing() as conn:
            await conn.execute(
                insert(api_tokens).values(
                    id=record.id, user_id=user_id, name=name, token_hash=token_hash, created_at=record.created_at
                )
            )
        return record

    async def list_tokens(self, user_id: str) -> list[TokenRecord]:
        q = (
            select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.created_at, api_tokens.c.last_used_at)
            .where(api_tokens.c.user_id == user_id)
            .order_by(api_tokens.c.created_at.desc(), api_tokens.c.id.desc())
        )
        async with self.engine.connect() as conn:
            return [TokenRecord(r[0], r[1], float(r[2]), r[3]) for r in await conn.execute(q)]

    async def delete_token(self, user_id: str, token_id: str) -> bool:
        async with self.sql._writing() as conn:
            res = await conn.execute(
                delete(api_tokens).where(and_(api_tokens.c.id == token_id, api_tokens.c.user_id == user_id))
            )
        return bool(res.rowcount)

    async def token(self, token_hash: str) -> tuple[Account, str, float | None] | None:
        """The (enabled) user a token belongs to, the token's id and when it was last used."""
        q = (
            select(*_USER_COLUMNS, api_tokens.c.id.label("token_id"), api_tokens.c.last_used_at)
            .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
            .where(and_(api_tokens.c.token_hash == token_hash, users.c.disabled.is_(False)))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        return _account(row), row._mapping["token_id"], row._mapping["last_used_at"]

    async def touch_token(self, token_id: str) -> None:
        async with self.sql._writing() as conn:
            await conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=time.time()))

    # one-time login links --------------------------------------------------------------------

    async def create_login_token(self, user_id: str, token_hash: str, ttl_s: float) -> None:
        now = time.time()
        async with self.sql._writing() as conn:
            await conn.execute(
                insert(login_tokens).values(token_hash=token_hash, user_id=user_id, created_at=now, expires_at=now + ttl_s)
            )

    async def consume_login_token(self, token_hash: str) -> str | None:
        """Mark the link used and return its user id, if it is unused and unexpired (atomically)."""
        now = time.time()
        async with self.sql._writing() as conn:
            res = await conn.execute(
                update(login_tokens)
                .where(and_(login_tokens.c.token_hash == token_hash, login_tokens.c.used_at.is_(None), login_tokens.c.expires_at > now))
                .values(used_at=now)
            )
            if res.rowcount != 1:
                return None
            user_id = (await conn.execute(select(login_tokens.c.user_id).where(login_tokens.c.token_hash == token_hash))).scalar_one()
        return str(user_id)

    # runs across users (admin) and per-user counts (limits) -----------------------------------

    async def all_runs(self, active: bool | None = None, limit: int = 200) -> list[tuple[Run, str]]:
        """Every user's runs, newest first, each with its owner's name."""
        q = select(runs, users.c.name.label("owner_name")).select_from(runs.join(users, users.c.id == runs.c.user_id))
        if active is True:
            q = q.where(runs.c.status.in_(_ACTIVE))
        elif active is False:
            q = q.where(runs.c.status.not_in(_ACTIVE))
        q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [(_run(r), str(r._mapping["owner_name"])) for r in await conn.execute(q)]

    async def count_active_runs(self, user_id: str, except_conversation: str | None = None) -> int:
        q = select(func.count()).select_from(runs).where(and_(runs.c.user_id == user_id, runs.c.status.in_(_ACTIVE)))
        if except_conversation is not None:
            q = q.where(runs.c.conversation_id != except_conversation)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def runs_since(self, user_id: str, since: float) -> tuple[int, float | None]:
        """How many runs the user created after `since`, and when the oldest of them was created."""
        q = select(func.count(), func.min(runs.c.created_at)).where(and_(runs.c.user_id == user_id, runs.c.created_at > since))
        async with self.engine.connect() as conn:
            count, oldest = (await conn.execute(q)).one()
        return int(count), (float(oldest) if oldest is not None else None)
