"""Database URLs and the one pooled ``AsyncEngine`` per app, tuned per dialect.

``normalize_url`` maps the URL forms users write (``sqlite:///f.db``,
``postgresql://``, ``mysql+pymysql://``...) to the async driver of each dialect;
``create_engine`` builds the engine with timeouts short enough that a dead server
becomes ``StoreUnavailable`` within seconds rather than a hang.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from agentsession.errors import ConfigError

__all__ = [
    "CONNECT_TIMEOUT",
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_engine",
    "dialect_of",
    "mask_url",
    "normalize_url",
]

#: Seconds to wait for a connection to open, or for a free one in the pool.
CONNECT_TIMEOUT = 5.0
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


def mask_url(url: str | URL) -> str:
    """``url`` as text with its password replaced by ``***``, for messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        # Unparseable: drop everything between '//' and '@', where a password would be.
        head, sep, rest = url.partition("//")
        if sep and "@" in rest:
            return f"{head}//***@{rest.rpartition('@')[2]}"
        return url


def normalize_url(url: str | URL) -> URL:
    """The async-driver URL for ``url``; ``ConfigError`` (password masked) if unusable."""
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
    * PostgreSQL (asyncpg) and MySQL/MariaDB (aiomysql): ``pool_pre_ping``,
      ``pool_size`` connections plus as many again on demand, and connect/checkout
      timeouts of ``CONNECT_TIMEOUT`` seconds.
    """
    target = normalize_url(url)
    dialect = dialect_of(target)
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
    options.update(
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=CONNECT_TIMEOUT,
        pool_recycle=1800,
    )
    if dialect == "postgresql":
        options["connect_args"] = {
            "timeout": CONNECT_TIMEOUT,
            # asyncpg prepares statements; after five runs PostgreSQL would switch to a
            # generic plan that reads and sorts a whole long conversation before LIMIT.
            "server_settings": {
                "application_name": "agentsession",
                "plan_cache_mode": "force_custom_plan",
            },
        }
    else:
        options["connect_args"] = {"connect_timeout": int(CONNECT_TIMEOUT), "charset": "utf8mb4"}
    engine = create_async_engine(target, **options)
    if dialect == "mysql":
        event.listen(engine.sync_engine, "connect", _mysql_session)
    return engine


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
