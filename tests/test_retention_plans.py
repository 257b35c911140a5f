"""Retention batches use indexes: no statement a run sends scans a whole table.

On PostgreSQL and MariaDB a database gets enough rows (half of them old) for the
planners' choices to be the ones of a real gateway, is analyzed, and every statement
of every rule (first batch, mid-run batch, MariaDB's last short batch) is explained.
A full scan would make each batch read every row and wait behind every row lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Executable

from agentsession.service import SessionService, now_ms
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.prune import (
    RULES,
    Cutoffs,
    boundary_query,
    delete_batch,
    delete_ids,
    delete_range,
    idle_window,
    select_batch,
)
from agentsession.stores.sql.schema import DEFAULT_TABLES, chat_tasks, feedback, sessions
from tests.databases import fresh_database, sql_service

pytestmark = pytest.mark.anyio

DAY = 86_400_000
NOW = now_ms()
CONVERSATIONS, TASKS, BATCH = 4_000, 40_000, 100
#: The first half of the tasks (by age) are older than the task cutoff.
TASK_CUT = NOW - 30 * DAY


@pytest.fixture(params=["postgresql", "mysql"])
async def loaded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A server database with conversations, tasks and feedback, half of each old."""
    async with (
        fresh_database(str(request.param), tmp_path) as url,
        sql_service(url) as service,
    ):
        store = store_of(service)
        await load(store)
        yield store


def store_of(service: SessionService) -> SqlStore:
    store = service.store
    assert isinstance(store, SqlStore)
    return store


async def load(store: SqlStore) -> None:
    conversations = [
        {
            "id": f"s-{i:05d}",
            "user_id": f"u-{i % 100}",
            "state": "{}",
            "version": 0,
            "created_time": NOW - 90 * DAY,
            # Half idle for 60 days, half used today; one in ten has expired.
            "updated_time": NOW - (60 * DAY if i % 2 else 1000),
            "expires_at": NOW - 1000 if i % 10 == 0 else NOW + 30 * DAY,
        }
        for i in range(CONVERSATIONS)
    ]
    step = 60 * DAY // TASKS

    def owner(i: int) -> int:
        return i % CONVERSATIONS if i < TASKS // 2 else 2 * i % CONVERSATIONS

    tasks = [
        {
            "id": f"{(i * 7919) % TASKS:08x}-task",  # key order is not age order
            # Recent tasks only in the conversations used today: the idle ones have none.
            "session_id": f"s-{owner(i):05d}",
            "user_id": f"u-{owner(i) % 100}",
            "user_message": "hello",
            "message_bubbles": "[]",
            "task_metadata": None,
            "created_time": NOW - 60 * DAY + i * step,
            "updated_time": NOW - 60 * DAY + i * step,
        }
        for i in range(TASKS)
    ]
    notes = [
        {
            "id": f"f-{task['id']}",
            "session_id": task["session_id"],
            "task_id": task["id"],
            "user_id": task["user_id"],
            "rating": "up",
            "comment": None,
            "created_time": task["created_time"],
        }
        for task in tasks[::8]
    ]
    async with store.engine.connect() as raw:
        connection = await raw.execution_options(isolation_level="READ COMMITTED")
        async with connection.begin():
            await connection.execute(sessions.insert(), conversations)
            await connection.execute(chat_tasks.insert(), tasks)
            await connection.execute(feedback.insert(), notes)
    async with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            await connection.exec_driver_sql("ANALYZE sessions, chat_tasks, feedback")
        else:
            result = await connection.exec_driver_sql(
                "ANALYZE TABLE sessions, chat_tasks, feedback"
            )
            result.fetchall()


def literal(statement: Executable, store: SqlStore) -> str:
    dialect = store.engine.sync_engine.dialect
    compiled = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return str(compiled)


async def full_scans(store: SqlStore, statement: Executable) -> list[str]:
    """The plan lines of ``statement`` that read a whole table (empty: none)."""
    sql = literal(statement, store)
    async with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            rows = (await connection.exec_driver_sql("EXPLAIN (COSTS OFF) " + sql)).fetchall()
            plan = [str(row[0]) for row in rows]
            assert any("Index" in line for line in plan), plan
            return [line for line in plan if "Seq Scan" in line]
        result = await connection.exec_driver_sql("EXPLAIN " + sql)
        keys = list(result.keys())
        rows = result.fetchall()
        plan = [dict(zip(keys, row, strict=True)) for row in rows]
        return [str(row) for row in plan if row["type"] in ("ALL", "index")]


async def first_key(store: SqlStore, statement: Executable) -> Any:
    async with store.engine.connect() as connection:
        rows = (await connection.execute(statement)).fetchall()
    return rows[0][-1] if rows else None


CUT = Cutoffs(now=NOW, tasks=TASK_CUT, feedback=TASK_CUT, idle=NOW - 30 * DAY)


@pytest.mark.parametrize("rule", RULES)
async def test_no_batch_statement_scans_a_whole_table(loaded: SqlStore, rule: str) -> None:
    store = loaded
    statements: dict[str, Executable] = {}
    if rule == "idle_sessions":
        # A window of candidates, read by index range, then the idle ones deleted by id.
        async with store.engine.connect() as connection:
            window = (
                await connection.execute(idle_window(DEFAULT_TABLES, CUT, None, BATCH))
            ).fetchall()
            after = (int(window[-1][1]), str(window[-1][0]))
            later = (
                await connection.execute(idle_window(DEFAULT_TABLES, CUT, after, BATCH))
            ).fetchall()
        assert len(later) == BATCH, "the data set has too few idle conversations"
        statements["first window"] = idle_window(DEFAULT_TABLES, CUT, None, BATCH)
        statements["mid-run window"] = idle_window(DEFAULT_TABLES, CUT, after, BATCH)
        statements["delete"] = delete_ids(DEFAULT_TABLES, rule, CUT, later)
        scans = {label: await full_scans(store, sql) for label, sql in statements.items()}
        assert scans == {label: [] for label in statements}, scans
        return
    # Mid-run: the range starts at the largest key a first batch would have deleted.
    first = select_batch(DEFAULT_TABLES, rule, CUT, None, BATCH)
    mid = await first_key(store, first.offset(BATCH - 1).limit(1))
    assert mid is not None, f"{rule}: the data set has too few old rows"
    for label, after in (("first batch", None), ("mid-run batch", int(mid))):
        if store.dialect == "postgresql":
            statements[label] = delete_batch(DEFAULT_TABLES, store.dialect, rule, CUT, after, BATCH)
            continue
        statements[f"{label}: boundary"] = boundary_query(DEFAULT_TABLES, rule, CUT, after, BATCH)
        upto = await first_key(store, boundary_query(DEFAULT_TABLES, rule, CUT, after, BATCH))
        assert upto is not None
        statements[f"{label}: delete"] = delete_range(
            DEFAULT_TABLES, rule, CUT, after, int(upto), BATCH
        )
    if store.dialect == "mysql":
        # The last, short batch: its rows are read, then deleted by id.
        async with store.engine.connect() as connection:
            rows = (
                await connection.execute(select_batch(DEFAULT_TABLES, rule, CUT, int(mid), 50))
            ).fetchall()
        statements["last batch: select"] = select_batch(DEFAULT_TABLES, rule, CUT, int(mid), BATCH)
        statements["last batch: delete"] = delete_ids(DEFAULT_TABLES, rule, CUT, rows)

    scans = {label: await full_scans(store, statement) for label, statement in statements.items()}

    assert scans == {label: [] for label in statements}, scans
