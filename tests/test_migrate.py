"""The shipped Alembic migrations on real databases.

Every test gets a brand-new empty database of each SQL backend: migrating creates
exactly the tables of ``schema.metadata``, runs once however many processes start
at the same moment, leaves the app's own Alembic version table alone, and a server
that is not there is ``StoreUnavailable`` within seconds.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agentsession.errors import ConfigError, StoreUnavailable
from agentsession.stores.sql import migrate as migrate_module
from agentsession.stores.sql.engine import create_engine, dialect_of
from agentsession.stores.sql.migrate import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    migrate,
)
from agentsession.stores.sql.schema import (
    FTS_SHADOW_TABLES,
    Tables,
    comparison_filter,
    metadata,
    search_objects,
    tables,
)
from tests.databases import SQL_BACKENDS, fresh_database

pytestmark = pytest.mark.anyio

TABLES = {"sessions", "chat_tasks", "feedback", "agentsession_leases", "agentsession_revocations"}


def ours(backend: str, prefix: str = "") -> set[str]:
    """Every table the migrations make: ``TABLES`` (prefixed), and on SQLite the FTS5
    table of search with its shadow tables."""
    names = {prefix + name for name in TABLES}
    if backend == "sqlite":
        fts = search_objects(prefix)["fts"]
        names |= {fts, *(f"{fts}_{shadow}" for shadow in FTS_SHADOW_TABLES)}
    return names


@pytest.fixture(params=SQL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def fresh_engine(backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    async with fresh_database(backend, tmp_path) as url:
        engine = create_engine(url, pool_size=2)
        try:
            yield url, engine
        finally:
            await engine.dispose()


async def table_names(engine: AsyncEngine) -> list[str]:
    """Every table of the database, as the catalogue lists it (duplicates kept)."""
    dialect = dialect_of(engine.url)
    if dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    elif dialect == "postgresql":
        query = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = 'public'"
        )
    else:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
    async with engine.connect() as conn:
        return sorted((await conn.execute(text(query))).scalars())


async def versions(engine: AsyncEngine, table: str = VERSION_TABLE) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(f"SELECT version_num FROM {table}"))).scalars())


async def test_migrate_creates_the_tables_once(backend: str, tmp_path: Path) -> None:
    async with fresh_engine(backend, tmp_path) as (_, engine):
        assert await current_revision(engine) is None

        assert await migrate(engine) is True

        assert set(await table_names(engine)) == {*ours(backend), VERSION_TABLE}
        assert await versions(engine) == [head_revision()]
        assert await current_revision(engine) == head_revision()
        # At head: a no-op.
        assert await migrate(engine) is False
        assert await versions(engine) == [head_revision()]


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "version_table": VERSION_TABLE,
            "compare_type": True,
            "include_object": comparison_filter(connection.dialect.name),
        },
    )
    return list(compare_metadata(context, metadata))


async def test_migrated_tables_match_schema_metadata(backend: str, tmp_path: Path) -> None:
    async with fresh_engine(backend, tmp_path) as (_, engine):
        await migrate(engine)
        async with engine.connect() as conn:
            differences = await conn.run_sync(_schema_differences)
        assert differences == []


def _details(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    return {
        "foreign_keys": sorted(
            (table, fk["name"], fk["referred_table"], fk["options"].get("ondelete"))
            for table in ("chat_tasks", "feedback")
            for fk in inspector.get_foreign_keys(table)
        ),
        "table_options": {table: inspector.get_table_options(table) for table in sorted(TABLES)},
    }


async def test_cascades_and_mysql_table_options(backend: str, tmp_path: Path) -> None:
    """What ``compare_metadata`` does not look at: ON DELETE and MySQL table options."""
    async with fresh_engine(backend, tmp_path) as (_, engine):
        await migrate(engine)
        async with engine.connect() as conn:
            details = await conn.run_sync(_details)
    cascades = [
        (table, referred, ondelete) for table, _, referred, ondelete in details["foreign_keys"]
    ]
    assert sorted(cascades) == [
        ("chat_tasks", "sessions", "CASCADE"),
        ("feedback", "sessions", "CASCADE"),
    ]
    if backend == "mysql":
        for table, options in details["table_options"].items():
            assert options["mysql_engine"] == "InnoDB", table
            assert options["mysql_default charset"] == "utf8mb4", table
            # NO PAD: 'abc' and 'abc ' are two ids (utf8mb4_bin would pad).
            assert options["mysql_collate"] in ("utf8mb4_nopad_bin", "utf8mb4_0900_bin"), table


async def test_ids_compare_exactly(backend: str, tmp_path: Path) -> None:
    """Case and trailing spaces make different ids on every backend."""
    async with fresh_engine(backend, tmp_path) as (_, engine):
        await migrate(engine)
        async with engine.begin() as conn:
            for id_ in ("abc", "ABC", "abc "):
                await conn.execute(
                    text(
                        "INSERT INTO agentsession_leases (name, owner, expires_at) "
                        "VALUES (:name, 'o', 0)"
                    ),
                    {"name": id_},
                )
        async with engine.connect() as conn:
            found = (
                await conn.execute(
                    text("SELECT name FROM agentsession_leases WHERE name = :name"),
                    {"name": "abc"},
                )
            ).scalars()
            assert list(found) == ["abc"]


async def test_listing_index_is_newest_first(backend: str, tmp_path: Path) -> None:
    """``compare_metadata`` sees index sort order only on PostgreSQL: ask the catalogue."""
    name = "ix_sessions_user_id_updated_time_id"
    async with fresh_engine(backend, tmp_path) as (_, engine):
        await migrate(engine)
        async with engine.connect() as conn:
            if backend == "sqlite":
                query = f"SELECT sql FROM sqlite_master WHERE name = '{name}'"
            elif backend == "postgresql":
                query = f"SELECT indexdef FROM pg_indexes WHERE indexname = '{name}'"
            else:
                query = (
                    "SELECT GROUP_CONCAT(column_name, ' ', collation ORDER BY seq_in_index) "
                    "FROM information_schema.statistics "
                    f"WHERE table_schema = DATABASE() AND index_name = '{name}'"
                )
            definition = str((await conn.execute(text(query))).scalar_one())
    if backend == "mysql":
        assert definition == "user_id A,updated_time D,id A"
    else:
        assert "(user_id, updated_time DESC, id)" in definition


async def test_downgrade_drops_everything(backend: str, tmp_path: Path) -> None:
    async with fresh_engine(backend, tmp_path) as (_, engine):
        await migrate(engine)

        def downgrade(connection: Connection) -> None:
            command.downgrade(alembic_config(connection), "base")

        async with engine.connect() as conn:
            await conn.run_sync(downgrade)
            await conn.commit()
        assert await table_names(engine) == [VERSION_TABLE]
        assert await versions(engine) == []
        # And back up again.
        assert await migrate(engine) is True
        assert set(await table_names(engine)) == {*ours(backend), VERSION_TABLE}


_ROWS_0001 = {
    "sessions": [
        ("s1", "alice", "{}", 0, 1, 1),
        ("s2", "bob", "{}", 0, 2, 2),
    ],
    "chat_tasks": [
        ("t1", "s1", "alice", '["a"]', 10, 10),
        ("t2", "s2", "bob", '["b"]', 20, 20),
        ("t3", "s1", "alice", '["c"]', 30, 30),
    ],
    "feedback": [
        ("f1", "s1", "t1", "alice", "up", 11),
        ("f2", "s2", "t2", "bob", "down", 21),
    ],
}
_COLUMNS_0001 = {
    "sessions": "id, user_id, state, version, created_time, updated_time",
    "chat_tasks": "id, session_id, user_id, message_bubbles, created_time, updated_time",
    "feedback": "id, session_id, task_id, user_id, rating, created_time",
}


async def _insert_0001_rows(conn: AsyncConnection) -> None:
    for table, rows in _ROWS_0001.items():
        columns = _COLUMNS_0001[table]
        marks = ", ".join(f":p{i}" for i in range(len(rows[0])))
        for row in rows:
            values = {f"p{i}": value for i, value in enumerate(row)}
            await conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), values)


async def _rows(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        return {
            table: sorted(
                tuple(row) for row in await conn.execute(text(f"SELECT {columns} FROM {table}"))
            )
            for table, columns in _COLUMNS_0001.items()
        }


async def test_upgrade_from_0001_keeps_rows_and_makes_task_ids_per_user(
    backend: str, tmp_path: Path
) -> None:
    """A database at 0001 with rows in it: 0002 keeps every row, the schema then matches
    ``schema.py``, the cascades still work, and two users may share a task id."""
    async with fresh_engine(backend, tmp_path) as (_, engine):

        def to_0001(connection: Connection) -> None:
            command.upgrade(alembic_config(connection), "0001")

        async with engine.connect() as conn:
            await conn.run_sync(to_0001)
            await conn.commit()
            await _insert_0001_rows(conn)
            await conn.commit()
        before = await _rows(engine)
        assert await current_revision(engine) == "0001"

        assert await migrate(engine) is True

        assert await current_revision(engine) == head_revision()
        assert await _rows(engine) == before
        async with engine.connect() as conn:
            assert await conn.run_sync(_schema_differences) == []
            # Bob may now have a "t1" of his own, and rate it.
            await conn.execute(
                text(
                    "INSERT INTO chat_tasks (id, session_id, user_id, message_bubbles, "
                    "created_time, updated_time) VALUES ('t1', 's2', 'bob', '[]', 40, 40)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO feedback (id, session_id, task_id, user_id, rating, "
                    "created_time) VALUES ('f3', 's2', 't1', 'bob', 'up', 41)"
                )
            )
            # Deleting alice's conversation takes her tasks and ratings, and no one else's.
            await conn.execute(text("DELETE FROM sessions WHERE id = 's1'"))
            await conn.commit()
        after = await _rows(engine)
        assert after["chat_tasks"] == [
            ("t1", "s2", "bob", "[]", 40, 40),
            ("t2", "s2", "bob", '["b"]', 20, 20),
        ]
        assert [row[0] for row in after["feedback"]] == ["f2", "f3"]


async def test_0004_drops_feedbacks_key_to_its_task_and_keeps_every_row(
    backend: str, tmp_path: Path
) -> None:
    """Feedback's foreign key to its task goes (the store keeps the link); its key to
    the conversation stays. Downgrading to 0003 puts it back; no row changes either way."""
    async with fresh_engine(backend, tmp_path) as (_, engine):
        await migrate(engine)
        async with engine.connect() as conn:
            await _insert_0001_rows(conn)
            await conn.commit()
        before = await _rows(engine)

        def keys(connection: Connection) -> list[tuple[str, str, str | None]]:
            found = _details(connection)["foreign_keys"]
            return sorted((table, referred, ondelete) for table, _, referred, ondelete in found)

        def to_0003(connection: Connection) -> None:
            command.downgrade(alembic_config(connection), "0003")

        async with engine.connect() as conn:
            assert ("feedback", "chat_tasks", "CASCADE") not in await conn.run_sync(keys)
            await conn.run_sync(to_0003)
            await conn.commit()
        assert await current_revision(engine) == "0003"
        assert await _rows(engine) == before
        async with engine.connect() as conn:
            assert ("feedback", "chat_tasks", "CASCADE") in await conn.run_sync(keys)
            assert ("feedback", "sessions", "CASCADE") in await conn.run_sync(keys)
        assert await migrate(engine) is True
        assert await _rows(engine) == before
        async with engine.connect() as conn:
            assert await conn.run_sync(keys) == [
                ("chat_tasks", "sessions", "CASCADE"),
                ("feedback", "sessions", "CASCADE"),
            ]


# One process: wait for the common start time (so all four race), migrate, and print
# whether this one applied the migration.
_MIGRATE_SCRIPT = """
import asyncio, sys, time
from agentsession.stores.sql.engine import create_engine
from agentsession.stores.sql.migrate import migrate

async def main():
    engine = create_engine(sys.argv[1])
    await asyncio.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    try:
        print(await migrate(engine))
    finally:
        await engine.dispose()

asyncio.run(main())
"""


async def test_four_processes_at_once_migrate_once(backend: str, tmp_path: Path) -> None:
    async with fresh_engine(backend, tmp_path) as (url, engine):
        start = f"{time.time() + 3:.3f}"
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _MIGRATE_SCRIPT,
                url,
                start,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(4)
        ]
        outputs = await asyncio.wait_for(
            asyncio.gather(*(process.communicate() for process in processes)), timeout=90
        )

        for process, (_, stderr) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, stderr.decode()
        applied = [stdout.decode().strip() for stdout, _ in outputs]
        assert sorted(applied) == ["False", "False", "False", "True"]
        assert await versions(engine) == [head_revision()]
        assert sorted(await table_names(engine)) == sorted({*ours(backend), VERSION_TABLE})


async def test_the_apps_own_alembic_version_is_left_alone(backend: str, tmp_path: Path) -> None:
    async with fresh_engine(backend, tmp_path) as (_, engine):
        async with engine.begin() as conn:
            await conn.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            )
            await conn.execute(text("INSERT INTO alembic_version VALUES ('app_rev_42')"))

        assert await migrate(engine) is True

        assert await versions(engine, "alembic_version") == ["app_rev_42"]
        assert await versions(engine) == [head_revision()]
        assert set(await table_names(engine)) == {*ours(backend), VERSION_TABLE, "alembic_version"}


async def test_a_failing_migration_is_not_store_unavailable(backend: str, tmp_path: Path) -> None:
    """A revision statement that fails is reported as it is, and (except on MySQL,
    whose DDL commits as it goes) leaves nothing behind."""
    async with fresh_engine(backend, tmp_path) as (_, engine):
        async with engine.begin() as conn:
            # A name in the way of the revision's last index (index names are per
            # database on PostgreSQL and SQLite), or on MySQL of a foreign key (InnoDB's
            # constraint names are per database).
            await conn.execute(text("CREATE TABLE app_things (x INTEGER PRIMARY KEY)"))
            if backend == "mysql":
                clash = "fk_feedback_task_id_chat_tasks"
                await conn.execute(
                    text(
                        f"CREATE TABLE app_more (x INTEGER, CONSTRAINT {clash} "
                        "FOREIGN KEY (x) REFERENCES app_things (x))"
                    )
                )
            else:
                clash = "ix_feedback_session_id"
                await conn.execute(text(f"CREATE INDEX {clash} ON app_things (x)"))

        with pytest.raises(DBAPIError) as raised:
            await migrate(engine)

        assert clash in str(raised.value) or backend == "mysql", raised.value
        assert await current_revision(engine) is None
        if backend != "mysql":
            assert await table_names(engine) == ["app_things"]


@pytest.mark.parametrize("prefix", ["", "app_"])
async def test_a_table_that_is_not_ours_stops_the_first_migration(
    backend: str, tmp_path: Path, prefix: str
) -> None:
    """The app's own ``<prefix>sessions``: a ConfigError naming the table and the
    setting, before anything is created; with another prefix the package lives beside it."""
    async with fresh_engine(backend, tmp_path) as (_, engine):
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {prefix}sessions (x INTEGER)"))
        target = tables(prefix)

        with pytest.raises(ConfigError) as raised:
            await migrate(engine, target)

        message = str(raised.value)
        assert message.startswith("session_service.table_prefix: "), message
        assert f"a table '{prefix}sessions' already exists in " in message
        assert "set session_service.table_prefix (SESSION_TABLE_PREFIX)" in message
        assert await table_names(engine) == [f"{prefix}sessions"]

        beside = tables(prefix + "as_")
        assert await migrate(engine, beside) is True
        assert set(await table_names(engine)) == {
            f"{prefix}sessions",
            *ours(backend, beside.prefix),
            beside.version_table,
        }
        assert await current_revision(engine, beside) == head_revision()
        async with engine.connect() as conn:
            differences = await conn.run_sync(_differences_of, beside)
        assert differences == []


def _differences_of(connection: Connection, target: Tables) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "version_table": target.version_table,
            "version_table_schema": target.schema,
            "compare_type": True,
            "include_name": lambda name, kind, _parent: kind != "table" or name in target.names,
            "include_object": comparison_filter(connection.dialect.name, target.prefix),
        },
    )
    return list(compare_metadata(context, target.metadata))


@asynccontextmanager
async def holding_the_migration_lock(backend: str, engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the lock ``migrate`` takes, as another process migrating would."""
    if backend == "sqlite":
        fd = os.open(f"{engine.url.database}.migrate.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
        return
    if backend == "postgresql":
        take = text("SELECT pg_advisory_lock(CAST(:key AS BIGINT))")
        free = text("SELECT pg_advisory_unlock(CAST(:key AS BIGINT))")
        params: dict[str, Any] = {"key": migrate_module._PG_LOCK_KEY}
    else:
        take = text("SELECT GET_LOCK(:name, 0)")
        free = text("SELECT RELEASE_LOCK(:name)")
        params = {"name": migrate_module._MYSQL_LOCK_NAME}
    async with engine.connect() as conn:
        got = await conn.scalar(take, params)
        assert backend == "postgresql" or got == 1  # pg_advisory_lock returns void
        try:
            yield
        finally:
            await conn.execute(free, params)


async def test_migrate_waits_for_the_lock_without_blocking_the_loop(
    backend: str, tmp_path: Path
) -> None:
    async with fresh_engine(backend, tmp_path) as (_, engine):
        async with holding_the_migration_lock(backend, engine):
            task = asyncio.create_task(migrate(engine))
            # The loop keeps running while migrate waits (a blocking wait would hang
            # here for good: the lock is only let go below).
            started = time.monotonic()
            for _ in range(20):
                await asyncio.sleep(0.025)
            assert time.monotonic() - started < 2
            assert not task.done()
            assert await current_revision(engine) is None
        assert await asyncio.wait_for(task, timeout=30) is True
        assert await versions(engine) == [head_revision()]


async def test_lock_wait_times_out_as_store_unavailable(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate_module, "LOCK_TIMEOUT", 1)
    async with fresh_engine(backend, tmp_path) as (_, engine):
        async with holding_the_migration_lock(backend, engine):
            with pytest.raises(StoreUnavailable, match="another migration"):
                await asyncio.wait_for(migrate(engine), timeout=30)
        # Nothing is left half-done or locked: the next attempt succeeds.
        assert await migrate(engine) is True


async def test_cancelled_sqlite_lock_wait_lets_the_lock_go(tmp_path: Path) -> None:
    async with fresh_engine("sqlite", tmp_path) as (_, engine):
        lock_path = f"{engine.url.database}.migrate.lock"
        async with holding_the_migration_lock("sqlite", engine):
            task = asyncio.create_task(migrate(engine))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # The waiting thread gives up (or lets go at once if it got the lock).
        fd = os.open(lock_path, os.O_RDWR)
        try:
            for _ in range(100):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.02)
            else:
                pytest.fail("the cancelled migrate still holds the lock file")
        finally:
            os.close(fd)
        assert await migrate(engine) is True


async def test_in_memory_sqlite() -> None:
    engine = create_engine("sqlite:///:memory:")
    try:
        assert await migrate(engine) is True
        assert await migrate(engine) is False
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:secretpw@127.0.0.1:1/x",
        "mysql://root:secretpw@127.0.0.1:1/x",
        "sqlite:////nonexistent-agentsession-dir/secretpw/x.db",
    ],
)
async def test_unreachable_database_is_store_unavailable(url: str) -> None:
    engine = create_engine(url)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            await migrate(engine)
        assert time.monotonic() - started < 10
        with pytest.raises(StoreUnavailable):
            await current_revision(engine)
    finally:
        await engine.dispose()
    message = str(raised.value)
    assert "127.0.0.1:1/x" in message or "x.db" in message
    if "sqlite" not in url:
        assert "secretpw" not in message
        assert "***" in message
