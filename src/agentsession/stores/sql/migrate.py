"""Bring the database schema to head with the package's own Alembic migrations.

Migrations run on startup, so several processes may start at once on a
fresh database: each first checks the version table (one query, no lock), and only
if it is behind takes a cross-process lock, checks again and upgrades. The lock is a
PostgreSQL transaction-level advisory lock, MySQL/MariaDB ``GET_LOCK``, or for SQLite
an ``flock`` on ``<dbfile>.migrate.lock``. The version table is
``<prefix>agentsession_alembic_version``, so the host app's own Alembic
(``alembic_version``) is never touched.

With a table prefix or a PostgreSQL schema (``schema.tables``) every table, index,
constraint and the version table carry them; the schema is created if missing. A
first migration that finds a table of its names already there (the app's own
``sessions``, say) stops with a ``ConfigError`` naming the table and the setting.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agentsession.errors import ConfigError, StoreUnavailable
from agentsession.stores.sql.engine import dialect_of, mask_url
from agentsession.stores.sql.errors import translate
from agentsession.stores.sql.schema import DEFAULT_TABLES, Tables

__all__ = [
    "LOCK_TIMEOUT",
    "SCRIPT_LOCATION",
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "head_revision",
    "migrate",
]

logger = logging.getLogger("agentsession.stores.sql.migrate")

#: Alembic's version table for this package's migrations (without a table prefix).
VERSION_TABLE = DEFAULT_TABLES.version_table
#: The migration scripts, as a package resource (works from a wheel or a checkout).
SCRIPT_LOCATION = "agentsession.stores.sql:migrations"
#: Seconds a process waits for another one's migration before giving up.
LOCK_TIMEOUT = 120

# PostgreSQL advisory-lock key: b"agentssn" as a signed 64-bit integer.
_PG_LOCK_KEY = int.from_bytes(b"agentssn", "big", signed=True)
_PG_LOCK_NOT_AVAILABLE = "55P03"
_MYSQL_LOCK_NAME = "agentsession_migrate"
_FILE_LOCK_POLL = 0.05


def alembic_config(
    connection: Connection | None = None,
    tables: Tables = DEFAULT_TABLES,
    *,
    search_language: str = "simple",
) -> Config:
    """A programmatic Alembic ``Config`` (no ini file) for the package's migrations.

    ``connection`` is handed to ``env.py``, which runs the migrations on it, for the
    table set ``tables`` (its prefix and schema). ``search_language``: PostgreSQL's
    text search configuration, which revision 0005 indexes existing tasks with.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["tables"] = tables
    config.attributes["search_language"] = search_language
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision of the shipped migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("agentsession ships no migrations")
    return head


async def current_revision(engine: AsyncEngine, tables: Tables = DEFAULT_TABLES) -> str | None:
    """The revision the database is at; ``None`` if never migrated."""
    async with _store_errors(engine), engine.connect() as conn:
        return await conn.run_sync(_current_revision, tables)


async def migrate(
    engine: AsyncEngine, tables: Tables = DEFAULT_TABLES, *, search_language: str = "simple"
) -> bool:
    """Upgrade the database to head; ``True`` if this call applied anything.

    ``search_language``: the text search configuration (PostgreSQL) that revision
    0005 indexes existing tasks with; pass the store's (``SqlStore.search_language``).

    Safe to call from many processes at once: the migration runs exactly once and
    every caller returns when the schema is at head. ``StoreUnavailable`` if the
    database cannot be reached (or another process's migration holds the lock for
    longer than ``LOCK_TIMEOUT``); ``StoreMisconfigured`` (also a ``ConfigError``) if
    the database, the user or a privilege the migration needs is missing, and
    ``ConfigError`` if a table it would create is already there and not its own.
    """
    # Reading the scripts is file I/O: keep it off the event loop.
    head = await asyncio.to_thread(head_revision)
    started = time.monotonic()
    found: set[str] | None = None
    try:
        async with _store_errors(engine), engine.connect() as conn:
            found = await _versions(conn, tables)
            if found == {head}:
                return False
            dialect = dialect_of(engine.url)
            upgrade = functools.partial(_upgrade, tables=tables, language=search_language)
            if dialect == "postgresql":
                applied = await _migrate_postgresql(conn, tables, upgrade)
            elif dialect == "mysql":
                applied = await _migrate_mysql(conn, upgrade)
            else:
                applied = await _migrate_sqlite(conn, engine.url.database, upgrade)
    except Exception as error:
        if found is not None:  # the schema was behind: the migration itself failed
            _log_migration(engine, tables, found, head, started, error)
        raise
    if applied:
        _log_migration(engine, tables, found, head, started, None)
    return applied


def _log_migration(
    engine: AsyncEngine,
    tables: Tables,
    found: set[str],
    head: str,
    started: float,
    error: Exception | None,
) -> None:
    """One record per migration, with fields (``extra=``) for JSON log formatters."""
    fields: dict[str, Any] = {
        "agentsession_event": "migration",
        "outcome": "ok" if error is None else "failed",
        "database": mask_url(engine.url),
        "schema": tables.schema,
        "version_table": tables.version_table,
        "from_revision": ",".join(sorted(found)) or None,
        "to_revision": head,
        "duration_s": round(time.monotonic() - started, 3),
    }
    where = f"{fields['database']} ({tables.version_table})"
    start = fields["from_revision"] or "an empty schema"
    if error is None:
        message = "migrated %s from %s to %s in %.2f s"
        logger.info(message, where, start, head, fields["duration_s"], extra=fields)
        return
    fields["error_type"] = type(error).__name__
    message = "migrating %s from %s to %s failed after %.2f s: %s"
    logger.error(message, where, start, head, fields["duration_s"], error, extra=fields)


async def _versions(conn: AsyncConnection, tables: Tables) -> set[str]:
    """The fast path: the revisions the version table holds (none if there is none)."""
    where = f"{tables.schema}." if tables.schema else ""
    try:
        result = await conn.execute(text(f"SELECT version_num FROM {where}{tables.version_table}"))
        versions = set(result.scalars())
    except DBAPIError as exc:
        if exc.connection_invalidated or translate(exc, conn.engine.url) is not None:
            raise  # gone, timed out or refused (no SELECT privilege): not a missing table
        # Most likely no version table yet; the locked path finds out properly.
        versions = set()
    await conn.rollback()
    return versions


#: ``_upgrade`` with its table set and language bound: what each dialect's path runs.
_Upgrade = Callable[[Connection], bool]


async def _migrate_postgresql(conn: AsyncConnection, tables: Tables, upgrade: _Upgrade) -> bool:
    # A transaction (the engine's connections autocommit), READ COMMITTED whatever
    # the server default: the check after the lock must see what the process that
    # held it committed.
    await conn.execution_options(isolation_level="READ COMMITTED")
    try:
        await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}s'"))
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:key AS BIGINT))"), {"key": _PG_LOCK_KEY}
        )
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE:
            raise TimeoutError(f"waited {LOCK_TIMEOUT}s for another migration") from exc
        raise
    # PostgreSQL DDL is transactional: the whole upgrade commits (and the lock is
    # released) at once. lock_timeout also bounds the revision's own lock waits, so
    # an ALTER stuck behind a long transaction fails instead of stalling the table.
    if tables.schema:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{tables.schema}"'))
    applied = await _run_upgrade(conn, upgrade)
    await conn.commit()
    return applied


async def _migrate_mysql(conn: AsyncConnection, upgrade: _Upgrade) -> bool:
    # Out of autocommit, so a revision's data changes commit together with its
    # version row (MySQL DDL commits implicitly regardless).
    await conn.execution_options(isolation_level="READ COMMITTED")
    got = await conn.scalar(
        text("SELECT GET_LOCK(:name, :timeout)"),
        {"name": _MYSQL_LOCK_NAME, "timeout": LOCK_TIMEOUT},
    )
    if got != 1:
        raise TimeoutError(f"waited {LOCK_TIMEOUT}s for another migration")
    try:
        # MySQL DDL commits implicitly: the lock, not a transaction, keeps others out.
        applied = await _run_upgrade(conn, upgrade)
        await conn.commit()
    finally:
        # The lock belongs to the server session, which goes back to the pool: free it.
        try:
            await conn.rollback()
            await conn.scalar(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK_NAME})
            await conn.rollback()
        except DBAPIError:
            # Discarding the session releases the lock too.
            await conn.invalidate()
    return applied


async def _migrate_sqlite(conn: AsyncConnection, database: str | None, upgrade: _Upgrade) -> bool:
    if database in (None, "", ":memory:"):
        return await _upgrade_sqlite(conn, upgrade)
    fd = await _lock_file(f"{database}.migrate.lock")
    try:
        await enable_wal(conn)
        return await _upgrade_sqlite(conn, upgrade)
    finally:
        _unlock_file(fd)


async def enable_wal(conn: AsyncConnection) -> None:
    """Put a SQLite database in WAL mode, waiting (asynchronously) for other readers.

    The switch needs the file to itself and SQLite returns "database is locked" at
    once rather than waiting, so it is retried here; the mode then sticks to the file.
    """
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            mode = await conn.scalar(text("PRAGMA journal_mode=WAL"))
        except OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(_FILE_LOCK_POLL)
            continue
        if str(mode).lower() == "wal":
            return
        raise StoreUnavailable(f"SQLite refused WAL mode (journal_mode is {mode!r})")


async def _upgrade_sqlite(conn: AsyncConnection, upgrade: _Upgrade) -> bool:
    # Neither autocommit nor pysqlite's implicit transactions cover DDL; an explicit
    # one makes the upgrade all-or-nothing, so a crash halfway never leaves tables
    # without a version row. IMMEDIATE: take the write lock now, not halfway.
    # Foreign keys are off meanwhile (SQLite's own recipe for rebuilding a table:
    # dropping a parent table would otherwise cascade into its children; the pragma
    # is a no-op inside a transaction, so it goes first) and are checked before COMMIT.
    await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            applied = await _run_upgrade(conn, upgrade)
            broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).fetchall()
            if broken:
                raise RuntimeError(
                    f"the migration would leave rows without their parent: {broken[:5]}"
                )
        except BaseException:
            # The pool sends no ROLLBACK for an autocommit connection: end ours here.
            await conn.exec_driver_sql("ROLLBACK")
            raise
        await conn.exec_driver_sql("COMMIT")
    finally:
        await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    return applied


class _UpgradeFailed(Exception):
    """Carries an error of the migration itself past ``_store_errors`` unchanged."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


async def _run_upgrade(conn: AsyncConnection, upgrade: _Upgrade) -> bool:
    # A statement of a revision failing (say, a table that is already there) is a
    # bug or a hand-made table, not an unreachable database: the caller sees it as
    # it is. Losing the connection halfway, a timeout, or a privilege the user lacks
    # (CREATE on the schema) is still translated: StoreUnavailable, StoreMisconfigured.
    try:
        return await conn.run_sync(upgrade)
    except DBAPIError as exc:
        if exc.connection_invalidated or translate(exc, conn.engine.url) is not None:
            raise
        raise _UpgradeFailed(exc) from exc


def _version_context(connection: Connection, tables: Tables) -> MigrationContext:
    opts = {"version_table": tables.version_table, "version_table_schema": tables.schema}
    return MigrationContext.configure(connection, opts=opts)


def _current_revision(connection: Connection, tables: Tables) -> str | None:
    return _version_context(connection, tables).get_current_revision()


def _upgrade(connection: Connection, *, tables: Tables, language: str) -> bool:
    """Under the lock: check again, then upgrade on ``connection`` (caller commits)."""
    heads = set(_version_context(connection, tables).get_current_heads())
    if heads == {head_revision()}:
        return False
    if not heads:
        _refuse_clashes(connection, tables)
    command.upgrade(alembic_config(connection, tables, search_language=language), "head")
    return True


def _refuse_clashes(connection: Connection, tables: Tables) -> None:
    """Before the first migration: none of the tables it creates may exist already."""
    existing = set(inspect(connection).get_table_names(schema=tables.schema))
    for name in tables.names:
        if name in existing:
            where = f"schema {tables.schema!r} of " if tables.schema else ""
            raise ConfigError(
                f"session_service.table_prefix: a table {name!r} already exists in "
                f"{where}{mask_url(connection.engine.url)} and is not agentsession's (there "
                f"is no {tables.version_table}); set session_service.table_prefix "
                "(SESSION_TABLE_PREFIX), e.g. 'agentsession_', or on PostgreSQL "
                "session_service.schema, so that agentsession's tables live beside it"
            )


async def _lock_file(path: str) -> int:
    """Take an exclusive lock on ``path`` without blocking the event loop."""
    cancelled = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(_lock_file_blocking, path, cancelled))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # The thread stops polling; if it got the lock meanwhile, let it go.
        cancelled.set()
        future.add_done_callback(_release_late_lock)
        raise


def _release_late_lock(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is None:
        _unlock_file(future.result())


def _lock_file_blocking(path: str, cancelled: threading.Event) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + LOCK_TIMEOUT
    try:
        while not _try_lock(fd):
            if cancelled.is_set():
                raise TimeoutError("cancelled")
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {LOCK_TIMEOUT}s for another migration ({path})")
            time.sleep(_FILE_LOCK_POLL)
    except BaseException:
        os.close(fd)
        raise
    return fd


if sys.platform == "win32":  # pragma: no cover
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock_file(fd: int) -> None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock_file(fd: int) -> None:
        # Closing the descriptor releases the lock.
        os.close(fd)


@asynccontextmanager
async def _store_errors(engine: AsyncEngine) -> AsyncIterator[None]:
    """Raise database failures as ``translate`` classifies them, as the store's calls do.

    Misconfiguration (no such database, user or privilege) becomes ``StoreMisconfigured``,
    an outage ``StoreUnavailable`` (also a lock file that cannot be used, or the wait for
    another process's migration timing out); a revision's own failing statement and
    anything unclassified go up as they are.
    """
    try:
        yield
    except _UpgradeFailed as failed:
        raise failed.error from None
    except Exception as exc:
        translated = translate(exc, engine.url)
        if translated is None:
            raise
        raise translated from exc
