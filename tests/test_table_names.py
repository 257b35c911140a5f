"""``session_service.table_prefix`` and (PostgreSQL) ``schema``: the package beside an
app's own tables, on every SQL backend.

The whole round (conversations, tasks, feedback, state, retention, its lease, stats)
runs on prefixed tables next to an app table named ``sessions``; the database then
holds the prefixed tables (in the schema, on PostgreSQL) and the app's table as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from agentsession import ConfigError, SessionService, load_config
from agentsession.config import AgentSessionConfig, RetentionConfig, ServiceConfig
from agentsession.retention import LEASE_NAME, prune
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.stats import database_stats
from tests.databases import fresh_database
from tests.test_cli import agentsession

pytestmark = pytest.mark.anyio

PREFIX = "as_"
SCHEMA = "agentsession_data"


async def _catalogue(store: SqlStore) -> set[str]:
    """Every table, as ``schema.name`` on PostgreSQL, else ``name``."""
    if store.dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    elif store.dialect == "postgresql":
        query = (
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
    else:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
    async with store.engine.connect() as connection:
        return set((await connection.execute(text(query))).scalars())


async def test_a_prefixed_store_lives_beside_the_apps_sessions_table(
    sql_backend: str, tmp_path: Path
) -> None:
    async with fresh_database(sql_backend, tmp_path) as url:
        schema = SCHEMA if sql_backend == "postgresql" else None
        config = ServiceConfig(type="sql", database_url=url, table_prefix=PREFIX, schema=schema)
        service = SessionService.from_config(config)
        store = service.store
        assert isinstance(store, SqlStore)
        async with store.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE sessions (app_column INTEGER)"))
            await connection.execute(text("INSERT INTO sessions VALUES (42)"))

        async with service:
            conversation = await service.create_session("alice", name="beside")
            await service.save_task("alice", conversation.id, "t1", message_bubbles=["hi"])
            await service.add_feedback("alice", conversation.id, "t1", "up")
            state = await service.state("alice", conversation.id)
            await state.set("k", 1)
            assert [t.id for t in (await service.list_tasks("alice", conversation.id)).items] == [
                "t1"
            ]
            assert (await service.list_feedback("alice")).items[0].task_id == "t1"
            # Retention and its lease run on the prefixed tables too: everything is old.
            report = await prune(
                service,
                retention=RetentionConfig(
                    task_retention_days=1, feedback_retention_days=1, session_retention_days=1
                ),
                now=conversation.created_time + 10 * 86_400_000,
                pause=0,
            )
            assert (report.chat_tasks, report.feedback, report.idle_sessions) == (1, 0, 1)
            found, expired, holder = await database_stats(
                store.engine, conversation.created_time, LEASE_NAME, store.tables
            )
            assert [(table.table, table.rows) for table in found] == [
                (f"{PREFIX}sessions", 0),
                (f"{PREFIX}chat_tasks", 0),
                (f"{PREFIX}feedback", 0),
            ]
            assert expired == 0
            assert holder is not None

            ours = {f"{PREFIX}{name}" for name in ("sessions", "chat_tasks", "feedback")}
            ours |= {f"{PREFIX}agentsession_leases", f"{PREFIX}agentsession_alembic_version"}
            ours.add(f"{PREFIX}agentsession_revocations")
            if sql_backend == "sqlite":  # the search index: an FTS5 table and its shadow tables
                fts = f"{PREFIX}chat_tasks_search"
                ours |= {fts, *(f"{fts}_{part}" for part in ("config", "data", "docsize", "idx"))}
            where = f"{SCHEMA}." if schema else ""
            app = "public.sessions" if schema else "sessions"
            assert await _catalogue(store) == {app, *(where + name for name in ours)}
            async with store.engine.connect() as connection:
                assert (await connection.execute(text("SELECT * FROM sessions"))).all() == [(42,)]


async def test_schema_is_postgresql_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ConfigError) as raised:
        SessionService.from_config(ServiceConfig(type="sql", database_url=url, schema="data"))
    assert str(raised.value).startswith(
        "session_service.schema: 'data' is set, but only PostgreSQL has schemas; "
    )


def test_the_settings_come_from_yaml_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "agentsession.yaml"
    path.write_text(
        "session_service:\n"
        "  type: sql\n"
        "  database_url: postgresql://db/app\n"
        "  table_prefix: chat_\n"
        "  schema: agents\n"
    )
    config = load_config(path, env={})
    assert (config.session_service.table_prefix, config.session_service.schema) == (
        "chat_",
        "agents",
    )
    env = {"SESSION_TABLE_PREFIX": "env_", "SESSION_DATABASE_SCHEMA": "other"}
    config = load_config(path, env=env)
    assert (config.session_service.table_prefix, config.session_service.schema) == (
        "env_",
        "other",
    )
    assert AgentSessionConfig.from_mapping({}, env={}).session_service.table_prefix == ""


@pytest.mark.parametrize(
    ("document", "env", "message"),
    [
        (
            {"session_service": {"table_prefix": "Chat-"}},
            {},
            "session_service.table_prefix: 'Chat-' is not a table prefix; use lowercase "
            "letters, digits and underscores, starting with a letter or underscore "
            "(e.g. 'agentsession_')",
        ),
        (
            {"session_service": {"table_prefix": "a" * 17}},
            {},
            f"session_service.table_prefix: {'a' * 17!r} is 17 characters; the limit is 16 "
            "(index names built from it must fit the database's limit)",
        ),
        (
            {},
            {"SESSION_TABLE_PREFIX": "1x"},
            "SESSION_TABLE_PREFIX: '1x' is not a table prefix; use lowercase letters, digits "
            "and underscores, starting with a letter or underscore (e.g. 'agentsession_')",
        ),
        (
            {"session_service": {"schema": "my schema"}},
            {},
            "session_service.schema: 'my schema' is not a schema name; use up to 63 lowercase "
            "letters, digits and underscores, starting with a letter or underscore",
        ),
        (
            {"session_service": {"schema": 5}},
            {},
            "session_service.schema: 5 is not a schema name; use up to 63 lowercase "
            "letters, digits and underscores, starting with a letter or underscore",
        ),
    ],
)
def test_bad_names_are_refused(
    document: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        AgentSessionConfig.from_mapping(document, env=env)
    assert str(raised.value) == message


async def test_the_command_line_uses_the_prefix(tmp_path: Path) -> None:
    """``agentsession migrate`` and ``stats`` on prefixed tables beside the app's own
    ``sessions``; without the prefix, migrate refuses and names the setting."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    store = SqlStore(url)
    async with store.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE sessions (app_column INTEGER)"))
    await store.close()

    refused = await agentsession("migrate", SESSION_DATABASE_URL=url)
    assert refused.status == 2, refused
    assert "session_service.table_prefix: a table 'sessions' already exists in " in refused.err

    migrated = await agentsession("migrate", SESSION_DATABASE_URL=url, SESSION_TABLE_PREFIX=PREFIX)
    assert migrated.status == 0, migrated
    stats = await agentsession("stats", SESSION_DATABASE_URL=url, SESSION_TABLE_PREFIX=PREFIX)
    assert stats.status == 0, stats
    assert f"{PREFIX}chat_tasks" in stats.out
