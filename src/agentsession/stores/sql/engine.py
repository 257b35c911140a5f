"""Database URLs and the one pooled ``AsyncEngine`` per app, tuned per dialect.

``normalize_url`` maps the URL forms users write (``sqlite:///f.db``,
``postgresql://``, ``mysql+pymysql://``...) to the async driver of each dialect and
checks their query parameters; ``create_engine`` builds the engine with timeouts
short enough that a dead server becomes ``StoreUnavailable`` within seconds rather
than a hang, and turns the URL's TLS and timeout parameters into driver arguments.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from agentsession.errors import ConfigError
from agentsession.stores.sql.urls import (
    CONNECT_TIMEOUT,
    aiomysql_connect,
    connect_params,
    mask_url,
    ssl_context,
)

__all__ = [
    "CONNECT_TIMEOUT",
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_engine",
    "dialect_of",
    "mask_url",
    "normalize_url",
]

#: How long a SQLite writer waits for another's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 5000

# dialect -> (async driver, the extra that installs it, the driver's module)
_DRIVERS = {
    "sqlite": ("aiosqlite", None, "aiosqlite"),
    "postgresql": ("asyncpg", "postgres", "asyncpg"),
    "mysql": ("aiomysql", "mysql", "aiomysql"),
    "mariadb": ("aiomysql", "mysql", "aiomysql"),
}
# drivers a user may name, whichever of them: all are served by the async driver
_ACCEPTED = {
    "sqlite": {"", "aiosqlite", "pysqlite"},
    "postgresql": {"", "asyncpg", "psycopg2", "psycopg"},
    "mysql": {"", "aiomysql", "pymysql", "mysqldb"},
    "mariadb": {"", "aiomysql", "pymysql", "mysqldb"},
}
_ALIASES = {"postgres": "postgresql"}


def normalize_url(url: str | URL) -> URL:
    """The async-driver URL for ``url``; ``ConfigError`` (password masked) if unusable.

    Query parameters of PostgreSQL and MySQL/MariaDB URLs are checked here, without
    connecting or reading any file (only whether the named files exist), and kept in
    the URL: ``create_engine`` translates them. Accepted on PostgreSQL (libpq's
    meaning): ``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``,
    ``connect_timeout``, ``application_name``, and, read by SQLAlchemy/asyncpg as
    they are, ``host``/``port`` (multi-host and Unix-socket forms),
    ``target_session_attrs`` and ``prepared_statement_cache_size``. On MySQL:
    ``ssl_mode`` (or ``ssl-mode``), ``ssl_ca``, ``ssl_capath``, ``ssl_cert``,
    ``ssl_key``, ``ssl_check_hostname``, ``ssl_verify_cert``, ``ssl_verify_identity``,
    ``ssl_disabled``, ``connect_timeout``, ``unix_socket`` and ``charset=utf8mb4``
    (the only character set the store works with, and what it always uses). Any other
    parameter is a ``ConfigError``: a driver would reject it at the first connection.
    SQLite URLs keep their query as SQLAlchemy reads it.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        raise ConfigError(
            f"session_service.database_url: {mask_url(url)!r} is not a database URL; "
            "expected e.g. sqlite:///file.db, postgresql://user:pass@host/db or "
            "mysql://user:pass@host/db"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    backend = _ALIASES.get(backend, backend)
    if backend not in _DRIVERS or driver not in _ACCEPTED[backend]:
        raise ConfigError(
            f"session_service.database_url: {mask_url(parsed)!r} uses "
            f"{parsed.drivername!r}; supported are sqlite, postgresql and mysql/mariadb "
            "(with their sync or async driver names)"
        )
    async_driver, extra, module = _DRIVERS[backend]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"session_service.database_url: {mask_url(parsed)!r} needs the {module} "
            f"driver: pip install 'agentsession[{extra}]'"
        )
    if backend == "sqlite":
        if parsed.host:
            raise ConfigError(
                f"session_service.database_url: {mask_url(parsed)!r}: a SQLite URL has "
                "no host; write sqlite:///relative.db or sqlite:////absolute/path.db"
            )
    elif not parsed.database:
        raise ConfigError(
            f"session_service.database_url: {mask_url(parsed)!r} names no database; "
            "add it after the host, e.g. .../app"
        )
    if backend != "sqlite":
        # a ConfigError for a bad query parameter, showing the URL as the user wrote it
        connect_params(parsed, "postgresql" if backend == "postgresql" else "mysql")
    return parsed.set(drivername=f"{backend}+{async_driver}")


def dialect_of(url: URL) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB included)."""
    backend = url.get_backend_name()
    return "mysql" if backend == "mariadb" else backend


def create_engine(url: str | URL, *, pool_size: int = 10) -> AsyncEngine:
    """A pooled ``AsyncEngine`` for ``url`` with this package's per-dialect settings.

    Connections are in autocommit mode: every store operation is one statement, so
    no BEGIN/COMMIT round trips are spent. Code that needs a transaction (the
    migrations) asks for one with ``connection.execution_options(isolation_level=...)``.

    * SQLite: WAL journal, foreign keys on, a busy timeout, ``synchronous=NORMAL``.
      ``sqlite:///:memory:`` gets a single shared connection.
    * PostgreSQL (asyncpg) and MySQL/MariaDB (aiomysql): ``pool_size`` connections plus
      as many again on demand, connect/checkout timeouts of ``CONNECT_TIMEOUT`` seconds
      (the URL's ``connect_timeout`` if any), and no pre-ping: one round trip per
      statement, a connection the server closed being replaced at checkout.
    * PostgreSQL TLS: ``sslmode`` disable/allow/prefer go to asyncpg as they are (it
      implements libpq's fallback); require/verify-ca/verify-full become an
      ``ssl.SSLContext`` with libpq's checks (``require`` verifies the CA when there
      is a root certificate, as libpq does; ``sslrootcert=system`` trusts the
      system's CAs). Files not in the URL default as in libpq (``PGSSLROOTCERT``...,
      ``~/.postgresql/root.crt``...). ``application_name`` replaces ``agentsession``.
    * MySQL TLS: aiomysql takes only an ``ssl.SSLContext`` and silently connects in
      plain text when the server has no TLS, so for REQUIRED and stronger a server
      that offers no TLS is refused before logging in. Without ``ssl_mode``,
      ``ssl_ca``/``ssl_capath`` mean VERIFY_IDENTITY (as SQLAlchemy with PyMySQL),
      lowered by ``ssl_check_hostname=false`` to VERIFY_CA; any other ``ssl_*``
      parameter means at least REQUIRED; no ``ssl_*`` at all keeps the driver's
      default, plain text. VERIFY_CA/VERIFY_IDENTITY without a CA use the system's.

    Certificate files are read here, once: a file that cannot be loaded is a
    ``ConfigError`` now rather than an error at each connection.
    """
    target = normalize_url(url)
    dialect = dialect_of(target)
    shown = url if isinstance(url, URL) else make_url(url)  # in messages: as the caller wrote it
    # Autocommit, and no ROLLBACK sent when a connection goes back to the pool (there is
    # no transaction to roll back): one round trip per statement on MySQL too.
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "skip_autocommit_rollback": True}
    if dialect == "sqlite":
        memory = target.database in (None, "", ":memory:")
        if memory:
            options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            options.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=CONNECT_TIMEOUT,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
        engine = create_async_engine(target, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(memory))
        return engine
    params = connect_params(target, dialect)
    tls = params.tls
    options.update(
        # No pre-ping round trip: a connection the server closed is noticed locally at
        # checkout (``_closed_by_server``) and replaced; one that breaks mid-statement
        # fails that call (503) and SQLAlchemy then refreshes the whole pool.
        pool_pre_ping=False,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=params.timeout,
        pool_recycle=1800,
    )
    connect_args: dict[str, Any]
    if dialect == "postgresql":
        connect_args = {
            "timeout": params.timeout,
            # asyncpg prepares statements; after five runs PostgreSQL would switch to a
            # generic plan that reads and sorts a whole long conversation before LIMIT.
            "server_settings": {
                "application_name": params.application_name,
                "plan_cache_mode": "force_custom_plan",
            },
        }
        if tls is not None:
            weak = tls.mode in ("disable", "allow", "prefer")
            connect_args["ssl"] = tls.mode if weak else ssl_context(shown, tls, dialect)
    else:
        from pymysql.constants import CLIENT  # type: ignore[import-untyped]

        connect_args = {
            "connect_timeout": params.timeout,
            "charset": "utf8mb4",
            # FOUND_ROWS as SQLAlchemy sets it (matched, not changed, rows); several
            # statements in one request, for a task's save in one round trip. Values
            # are always bound (PyMySQL escapes them), never pasted into SQL text.
            "client_flag": CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS,
        }
        if tls is not None:
            connect_args["ssl"] = ssl_context(shown, tls, dialect)
            # SQLAlchemy's aiomysql adapter connects with this function when given one
            connect_args["async_creator_fn"] = aiomysql_connect(
                None if tls.mode == "PREFERRED" else tls.mode
            )
    options["connect_args"] = connect_args
    engine = create_async_engine(params.url, **options)
    if dialect == "mysql":
        event.listen(engine.sync_engine, "connect", _mysql_session)
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout: hand out no connection the server has already closed.

    A restarted database closes every connection it had; the driver sees the socket's
    end as soon as the event loop runs, so this costs no round trip (unlike
    ``pool_pre_ping``'s ``SELECT 1``). ``DisconnectionError`` makes the pool discard
    the connection and check out (or open) another.
    """
    if _closed_by_server(getattr(dbapi_connection, "driver_connection", dbapi_connection)):
        raise DisconnectionError("the database server closed this pooled connection")


def _closed_by_server(connection: Any) -> bool:
    """Whether the driver connection's socket has been closed by the other end."""
    is_closed = getattr(connection, "is_closed", None)  # asyncpg
    if callable(is_closed):
        return bool(is_closed())
    if getattr(connection, "_writer", True) is None:  # aiomysql, closed by us
        return True
    reader = getattr(connection, "_reader", None)  # aiomysql: end of stream received
    transport = getattr(getattr(connection, "_writer", None), "transport", None)
    return bool(getattr(reader, "_eof", False)) or bool(
        transport is not None and transport.is_closing()
    )


# Per-connection setup


def _mysql_session(dbapi_connection: Any, _record: Any) -> None:
    """READ COMMITTED: ``INSERT ... SELECT`` reads the owner's row without gap locks,
    so concurrent upserts of one task wait for each other instead of deadlocking."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    finally:
        cursor.close()


def _sqlite_pragmas(memory: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not memory:
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA journal_mode")
                if str(cursor.fetchone()[0]).lower() != "wal":
                    try:
                        cursor.execute("PRAGMA journal_mode=WAL")
                    except Exception as error:
                        # Switching needs the database to itself and SQLite does not wait
                        # for that: another process is using it, and the migration
                        # (``db.migrate.enable_wal``) switches it under its lock.
                        if "locked" not in str(error):
                            raise
        finally:
            cursor.close()

    return on_connect
