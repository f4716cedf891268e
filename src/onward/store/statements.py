"""The hot statements (run start, claim, stream open, replay, group commit) executed by the driver.

Design decision: on SQLite a statement of the hot paths goes straight to the `sqlite3` connection
under the SQLAlchemy Connection — same connection, same transaction — instead of through
SQLAlchemy's execution layer, which costs ~100 µs per statement on top of SQLite's ~7 µs (execution
context, parameter processing, result proxy). A run's lifecycle is a dozen such statements, and
that overhead, mostly holding the GIL, was a quarter of the server's CPU in a burst of run starts.
The statements are `text()` with `:name` parameters, which `sqlite3` takes as they are. Other
databases (Postgres through asyncpg) execute them through SQLAlchemy as before. Cold statements
(`select()`, `insert()` …) keep going through SQLAlchemy everywhere.

Rows come back as mappings (`row["column"]`) on both paths, and errors as SQLAlchemy's exceptions
(`IntegrityError`, `OperationalError`, …) on both paths, so callers handle one kind.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import Connection, TextClause
from sqlalchemy.exc import DBAPIError

Params = Mapping[str, Any] | None


class Row(Protocol):
    """A row by column name: a `sqlite3.Row` or SQLAlchemy's `RowMapping`."""

    def __getitem__(self, key: str, /) -> Any: ...


class _Translated:
    """Raises sqlite3's exceptions as SQLAlchemy raises them (a class, not a generator-based
    context manager: this wraps every hot statement)."""

    __slots__ = ("_params", "_sql")

    def __init__(self, sql: str, params: Any) -> None:
        self._sql, self._params = sql, params

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, sqlite3.Error):
            raise DBAPIError.instance(self._sql, self._params, exc, sqlite3.Error) from exc


def _driver(conn: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `conn`, or None for any other database."""
    if conn.dialect.name != "sqlite":
        return None
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


def execute(conn: Connection, stmt: TextClause, params: Mapping[str, Any] | None = None) -> int:
    """Run a statement (a change); returns the number of rows it changed."""
    raw = _driver(conn)
    if raw is None:
        return int(conn.execute(stmt, params or {}).rowcount)
    with _Translated(stmt.text, params):
        return raw.execute(stmt.text, params or {}).rowcount


def execute_driver_sql(conn: Connection, sql: str, params: Sequence[Any] | list[Sequence[Any]]) -> None:
    """Run SQL written in the driver's own parameter style (a list of tuples: once per tuple)."""
    raw = _driver(conn)
    if raw is None:
        conn.exec_driver_sql(sql, params)
        return
    with _Translated(sql, params):
        if isinstance(params, list):
            raw.executemany(sql, params)
        else:
            raw.execute(sql, params)


def execute_many(conn: Connection, stmt: TextClause, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run a statement once per parameter set."""
    raw = _driver(conn)
    if raw is None:
        conn.execute(stmt, list(rows))
        return
    with _Translated(stmt.text, rows):
        raw.executemany(stmt.text, rows)


def fetch_all(conn: Connection, stmt: TextClause, params: Params = None) -> list[Row]:
    raw = _driver(conn)
    if raw is None:
        return [r._mapping for r in conn.execute(stmt, params or {})]
    cursor = raw.cursor()
    cursor.row_factory = sqlite3.Row
    with _Translated(stmt.text, params):
        return cursor.execute(stmt.text, params or {}).fetchall()


def fetch_one(conn: Connection, stmt: TextClause, params: Params = None) -> Row | None:
    raw = _driver(conn)
    if raw is None:
        row = conn.execute(stmt, params or {}).first()
        return row._mapping if row is not None else None
    cursor = raw.cursor()
    cursor.row_factory = sqlite3.Row
    with _Translated(stmt.text, params):
        found: sqlite3.Row | None = cursor.execute(stmt.text, params or {}).fetchone()
    return found


def fetch_value(conn: Connection, stmt: TextClause, params: Params = None) -> Any:
    """The first column of the first row (None if there is no row)."""
    raw = _driver(conn)
    if raw is None:
        return conn.execute(stmt, params or {}).scalar()
    with _Translated(stmt.text, params):
        row = raw.execute(stmt.text, params or {}).fetchone()
    return row[0] if row is not None else None
