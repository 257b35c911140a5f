"""Database URLs and the per-dialect engine settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from agentsession.errors import ConfigError
from agentsession.stores.sql.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_engine,
    dialect_of,
    mask_url,
    normalize_url,
)
from tests.databases import fresh_database

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("url", "drivername", "dialect"),
    [
        ("sqlite:///file.db", "sqlite+aiosqlite", "sqlite"),
        ("sqlite+aiosqlite:///f.db", "sqlite+aiosqlite", "sqlite"),
        ("sqlite+pysqlite:///f.db", "sqlite+aiosqlite", "sqlite"),
        ("postgresql://u:pw@db.example:5433/app", "postgresql+asyncpg", "postgresql"),
        ("postgres://u:pw@db.example:5433/app", "postgresql+asyncpg", "postgresql"),
        ("postgresql+asyncpg://u:pw@db.example:5433/app", "postgresql+asyncpg", "postgresql"),
        ("postgresql+psycopg2://u:pw@db.example:5433/app", "postgresql+asyncpg", "postgresql"),
        ("mysql://u:pw@db.example:5433/app", "mysql+aiomysql", "mysql"),
        ("mysql+pymysql://u:pw@db.example:5433/app", "mysql+aiomysql", "mysql"),
        ("mysql+aiomysql://u:pw@db.example:5433/app", "mysql+aiomysql", "mysql"),
        ("mariadb://u:pw@db.example:5433/app", "mariadb+aiomysql", "mysql"),
    ],
)
def test_urls_map_to_the_async_driver(url: str, drivername: str, dialect: str) -> None:
    normalized = normalize_url(url)
    assert normalized.drivername == drivername
    assert dialect_of(normalized) == dialect
    if dialect == "sqlite":
        assert normalized.database in ("file.db", "f.db")
        assert normalized.host is None
    else:
        # Everything but the driver is kept as written.
        assert (normalized.username, normalized.password) == ("u", "pw")
        assert (normalized.host, normalized.port, normalized.database) == (
            "db.example",
            5433,
            "app",
        )


def test_sqlite_absolute_path_and_memory() -> None:
    assert normalize_url("sqlite:////var/lib/app/s.db").database == "/var/lib/app/s.db"
    assert normalize_url("sqlite:///:memory:").database == ":memory:"
    assert normalize_url("sqlite://").drivername == "sqlite+aiosqlite"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("not a url", "not a url"),
        ("oracle://u:secretpw@h/db", "oracle://u:***@h/db"),
        ("postgresql://u:secretpw@h", "postgresql://u:***@h"),
        ("mysql://u:secretpw@h:3306", "mysql://u:***@h:3306"),
        ("sqlite://host/x.db", "sqlite://host/x.db"),
        ("sqlite://u:secretpw@host/x.db", "sqlite://u:***@host/x.db"),
        ("postgresql+oracledb://u:secretpw@h/db", "postgresql+oracledb://u:***@h/db"),
    ],
)
def test_bad_urls_are_config_errors_with_the_password_masked(url: str, masked: str) -> None:
    with pytest.raises(ConfigError) as raised:
        normalize_url(url)
    message = str(raised.value)
    assert masked in message
    assert mask_url(url) in message
    assert "secretpw" not in message
    assert "database_url" in message
    # create_engine checks the same way, before anything connects.
    with pytest.raises(ConfigError) as raised:
        create_engine(url)
    assert "secretpw" not in str(raised.value)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a database URL"):
        normalize_url("not a url")


def test_mask_url() -> None:
    assert mask_url("postgresql://u:secretpw@h/db") == "postgresql://u:***@h/db"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert "secretpw" not in mask_url("weird//u:secretpw@h/db")


async def _pragmas(engine: AsyncEngine) -> tuple[str, int, int]:
    async with engine.connect() as conn:
        journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
        foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
        busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
    return str(journal).lower(), int(foreign_keys), int(busy)


async def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}", pool_size=3)
    try:
        assert await _pragmas(engine) == ("wal", 1, SQLITE_BUSY_TIMEOUT_MS)
        assert SQLITE_BUSY_TIMEOUT_MS == 5000
        # Every pooled connection gets them, not just the first.
        async with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
        assert engine.sync_engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_sqlite_memory_engine_has_foreign_keys() -> None:
    engine = create_engine("sqlite:///:memory:")
    try:
        journal, foreign_keys, busy = await _pragmas(engine)
        assert journal == "memory"
        assert (foreign_keys, busy) == (1, SQLITE_BUSY_TIMEOUT_MS)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("url", ["postgresql://u:pw@127.0.0.1/app", "mysql://u:pw@127.0.0.1/app"])
@pytest.mark.parametrize("pool_size", [1, 7])
def test_server_engines_do_not_pre_ping(url: str, pool_size: int) -> None:
    """One round trip per statement: no ``SELECT 1`` before each (see the next test)."""
    engine = create_engine(url, pool_size=pool_size)
    pool = engine.sync_engine.pool
    assert pool._pre_ping is False
    assert pool.size() == pool_size  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
async def test_a_connection_the_server_closed_is_replaced_without_a_ping(
    backend: str, tmp_path: Path
) -> None:
    """The server ends a pooled connection (as a restart does): the next checkout
    notices it locally and opens another; the caller sees no error, and the only
    statements sent are the caller's own."""
    whoami = "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
    async with fresh_database(backend, tmp_path) as url:
        engine = create_engine(url, pool_size=1)
        other = create_engine(url, pool_size=1)
        sent: list[str] = []
        event.listen(
            engine.sync_engine, "before_cursor_execute", lambda *args: sent.append(args[2])
        )
        try:
            async with engine.connect() as conn:
                first = (await conn.execute(text(whoami))).scalar_one()
            kill = (
                f"SELECT pg_terminate_backend({first})"
                if backend == "postgresql"
                else (f"KILL {first}")
            )
            async with other.connect() as conn:
                await conn.execute(text(kill))
            await asyncio.sleep(0.3)  # the FIN reaches the client's event loop
            async with engine.connect() as conn:
                second = (await conn.execute(text(whoami))).scalar_one()
            assert second != first
            assert sent == [whoami, whoami]
        finally:
            await engine.dispose()
            await other.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
async def test_server_engines_connect(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        engine = create_engine(url, pool_size=2)
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            assert engine.sync_engine.pool.size() == 2  # type: ignore[attr-defined]
        finally:
            await engine.dispose()
