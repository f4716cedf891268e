"""Storage of users, sessions, API tokens and one-time login links, over SqlStore's database.

Every operation runs through SqlStore's `Database` in one hop (SQLite writes on the one writer
thread, in order with the journal's). Secrets arrive here already hashed: this module never sees a password, session id or token.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from onward.accounts.values import Account, SessionRecord, TokenRecord
from onward.core.runs import ACTIVE_STATUSES, Run
from onward.errors import Conflict, NotFound
from onward.ids import new_id
from onward.store.schema import api_tokens, login_tokens, runs, sessions, users
from onward.store.sql import SqlStore, _run
from onward.store.statements import Row, fetch_one

_ACTIVE = [s.value for s in ACTIVE_STATUSES]
# Every API request looks its token up: a statement compiled once (see store/sql.py).
_TOKEN = text(
    "SELECT users.id, users.name, users.is_admin, users.disabled, users.password_hash, users.created_at, "
    "api_tokens.id AS token_id, api_tokens.last_used_at FROM api_tokens JOIN users ON users.id = api_tokens.user_id "
    "WHERE api_tokens.token_hash = :token_hash AND users.disabled = :no"
)
# every stream a web page opens asks for its session: compiled once, like the statements in sql.py
_SESSION = text(
    "SELECT users.id, users.name, users.is_admin, users.disabled, users.password_hash, users.created_at, "
    "sessions.csrf_token, sessions.last_seen_at, sessions.expires_at FROM sessions JOIN users ON users.id = "
    "sessions.user_id WHERE sessions.id_hash = :id_hash AND sessions.expires_at > :now AND users.disabled = :no"
)
_USER_COLUMNS = (users.c.id, users.c.name, users.c.is_admin, users.c.disabled, users.c.password_hash, users.c.created_at)


def _account(m: Row) -> Account:
    """An Account from a row holding the user columns (by name)."""
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
        self.db = sql.db

    # users -----------------------------------------------------------------------------------

    async def create_user(self, name: str, password_hash: str | None, is_admin: bool = False) -> Account:
        try:
            return await self.db.write(_create_user, name, password_hash, is_admin)
        except IntegrityError as exc:
            raise Conflict(f"a user named {name!r} already exists") from exc

    async def get_user(self, user_id: str) -> Account:
        return await self.db.read(_get_user, user_id)

    async def user_with_hash(self, name: str) -> tuple[Account, str | None] | None:
        """The user called `name` and its password hash, for a login; None if there is none."""
        return await self.db.read(_user_with_hash, name)

    async def list_users(self) -> list[Account]:
        return await self.db.read(_list_users)

    async def update_user(self, user_id: str, **values: Any) -> Account:
        """Set password_hash, is_admin and/or disabled."""
        return await self.db.write(_update_user, user_id, values)

    async def count_enabled_users(self) -> int:
        return await self.db.read(_count_enabled_users)

    async def any_password(self) -> bool:
        return await self.db.read(_any_password)

    # sessions --------------------------------------------------------------------------------

    async def create_session(self, user_id: str, id_hash: str, csrf_token: str, ttl_s: float) -> None:
        await self.db.write(_create_session, user_id, id_hash, csrf_token, ttl_s)

    async def session(self, id_hash: str) -> SessionRecord | None:
        """The live session with this id hash, and its (enabled) user; None if there is none."""
        return await self.db.read(_session, id_hash)

    async def touch_session(self, id_hash: str) -> None:
        await self.db.write(_touch_session, id_hash)

    async def delete_session(self, id_hash: str) -> None:
        await self.db.write(_delete_where, sessions, sessions.c.id_hash == id_hash)

    async def delete_user_sessions(self, user_id: str) -> None:
        await self.db.write(_delete_where, sessions, sessions.c.user_id == user_id)

    async def purge_expired(self) -> None:
        await self.db.write(_purge_expired)

    # API tokens ------------------------------------------------------------------------------

    async def create_token(self, user_id: str, name: str, token_hash: str) -> TokenRecord:
        return await self.db.write(_create_token, user_id, name, token_hash)

    async def list_tokens(self, user_id: str) -> list[TokenRecord]:
        return await self.db.read(_list_tokens, user_id)

    async def delete_token(self, user_id: str, token_id: str) -> bool:
        where = and_(api_tokens.c.id == token_id, api_tokens.c.user_id == user_id)
        return await self.db.write(_delete_where, api_tokens, where) > 0

    async def token(self, token_hash: str) -> tuple[Account, str, float | None] | None:
        """The (enabled) user a token belongs to, the token's id and when it was last used."""
        return await self.db.read(_token, token_hash)

    async def touch_token(self, token_id: str) -> None:
        await self.db.write(_touch_token, token_id)

    # one-time login links --------------------------------------------------------------------

    async def create_login_token(self, user_id: str, token_hash: str, ttl_s: float) -> None:
        await self.db.write(_create_login_token, user_id, token_hash, ttl_s)

    async def consume_login_token(self, token_hash: str) -> str | None:
        """Mark the link used and return its user id, if it is unused and unexpired (atomically)."""
        return await self.db.write(_consume_login_token, token_hash)

    # runs across users (admin) and per-user counts (limits) -----------------------------------

    async def all_runs(self, active: bool | None = None, limit: int = 200) -> list[tuple[Run, str]]:
        """Every user's runs, newest first, each with its owner's name."""
        return await self.db.read(_all_runs, active, limit)

    async def count_active_runs(self, user_id: str, except_conversation: str | None = None) -> int:
        return await self.db.read(_count_active_runs, user_id, except_conversation)

    async def runs_since(self, user_id: str, since: float) -> tuple[int, float | None]:
        """How many runs the user created after `since`, and when the oldest of them was created."""
        return await self.db.read(_runs_since, user_id, since)


# The operations, each on one connection (in a transaction when run through `write`).


def _create_user(conn: Connection, name: str, password_hash: str | None, is_admin: bool) -> Account:
    user_id = new_id("usr")
    conn.execute(
        insert(users).values(
            id=user_id, name=name, created_at=time.time(), password_hash=password_hash,
            is_admin=is_admin, disabled=False,
        )
    )
    return _get_user(conn, user_id)


def _get_user(conn: Connection, user_id: str) -> Account:
    row = conn.execute(select(*_USER_COLUMNS).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFound(f"no user {user_id!r}")
    return _account(row._mapping)


def _user_with_hash(conn: Connection, name: str) -> tuple[Account, str | None] | None:
    row = conn.execute(select(*_USER_COLUMNS).where(users.c.name == name)).first()
    return (_account(row._mapping), row._mapping["password_hash"]) if row else None


def _list_users(conn: Connection) -> list[Account]:
    return [_account(r._mapping) for r in conn.execute(select(*_USER_COLUMNS).order_by(users.c.created_at, users.c.id))]


def _update_user(conn: Connection, user_id: str, values: dict[str, Any]) -> Account:
    res = conn.execute(update(users).where(users.c.id == user_id).values(**values))
    if res.rowcount == 0:
        raise NotFound(f"no user {user_id!r}")
    return _get_user(conn, user_id)


def _count_enabled_users(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(users).where(users.c.disabled.is_(False))).scalar_one())


def _any_password(conn: Connection) -> bool:
    return conn.execute(select(users.c.id).where(users.c.password_hash.is_not(None)).limit(1)).first() is not None


def _create_session(conn: Connection, user_id: str, id_hash: str, csrf_token: str, ttl_s: float) -> None:
    now = time.time()
    conn.execute(
        insert(sessions).values(
            id_hash=id_hash, user_id=user_id, csrf_token=csrf_token,
            created_at=now, last_seen_at=now, expires_at=now + ttl_s,
        )
    )


def _session(conn: Connection, id_hash: str) -> SessionRecord | None:
    m = fetch_one(conn, _SESSION, {"id_hash": id_hash, "now": time.time(), "no": False})
    if m is None:
        return None
    return SessionRecord(id_hash, _account(m), m["csrf_token"], float(m["last_seen_at"]), float(m["expires_at"]))


def _touch_session(conn: Connection, id_hash: str) -> None:
    conn.execute(update(sessions).where(sessions.c.id_hash == id_hash).values(last_seen_at=time.time()))


def _delete_where(conn: Connection, table: Any, where: Any) -> int:
    return int(conn.execute(delete(table).where(where)).rowcount)


def _purge_expired(conn: Connection) -> None:
    now = time.time()
    conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
    conn.execute(delete(login_tokens).where(login_tokens.c.expires_at <= now))


def _create_token(conn: Connection, user_id: str, name: str, token_hash: str) -> TokenRecord:
    record = TokenRecord(new_id("tok"), name, time.time(), None)
    conn.execute(
        insert(api_tokens).values(
            id=record.id, user_id=user_id, name=name, token_hash=token_hash, created_at=record.created_at
        )
    )
    return record


def _list_tokens(conn: Connection, user_id: str) -> list[TokenRecord]:
    q = (
        select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.created_at, api_tokens.c.last_used_at)
        .where(api_tokens.c.user_id == user_id)
        .order_by(api_tokens.c.created_at.desc(), api_tokens.c.id.desc())
    )
    return [TokenRecord(r[0], r[1], float(r[2]), r[3]) for r in conn.execute(q)]


def _token(conn: Connection, token_hash: str) -> tuple[Account, str, float | None] | None:
    row = fetch_one(conn, _TOKEN, {"token_hash": token_hash, "no": False})
    if row is None:
        return None
    return _account(row), row["token_id"], row["last_used_at"]


def _touch_token(conn: Connection, token_id: str) -> None:
    conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=time.time()))


def _create_login_token(conn: Connection, user_id: str, token_hash: str, ttl_s: float) -> None:
    now = time.time()
    conn.execute(
        insert(login_tokens).values(token_hash=token_hash, user_id=user_id, created_at=now, expires_at=now + ttl_s)
    )


def _consume_login_token(conn: Connection, token_hash: str) -> str | None:
    now = time.time()
    res = conn.execute(
        update(login_tokens)
        .where(and_(login_tokens.c.token_hash == token_hash, login_tokens.c.used_at.is_(None), login_tokens.c.expires_at > now))
        .values(used_at=now)
    )
    if res.rowcount != 1:
        return None
    return str(conn.execute(select(login_tokens.c.user_id).where(login_tokens.c.token_hash == token_hash)).scalar_one())


def _all_runs(conn: Connection, active: bool | None, limit: int) -> list[tuple[Run, str]]:
    q = select(runs, users.c.name.label("owner_name")).select_from(runs.join(users, users.c.id == runs.c.user_id))
    if active is True:
        q = q.where(runs.c.status.in_(_ACTIVE))
    elif active is False:
        q = q.where(runs.c.status.not_in(_ACTIVE))
    q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
    return [(_run(r._mapping), str(r._mapping["owner_name"])) for r in conn.execute(q)]


def _count_active_runs(conn: Connection, user_id: str, except_conversation: str | None) -> int:
    q = select(func.count()).select_from(runs).where(and_(runs.c.user_id == user_id, runs.c.status.in_(_ACTIVE)))
    if except_conversation is not None:
        q = q.where(runs.c.conversation_id != except_conversation)
    return int(conn.execute(q).scalar_one())


def _runs_since(conn: Connection, user_id: str, since: float) -> tuple[int, float | None]:
    q = select(func.count(), func.min(runs.c.created_at)).where(and_(runs.c.user_id == user_id, runs.c.created_at > since))
    count, oldest = conn.execute(q).one()
    return int(count), (float(oldest) if oldest is not None else None)
