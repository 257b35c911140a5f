"""Retention: what ``prune`` deletes, the lease, and the scheduler.

Everything runs on real databases: SQLite, PostgreSQL and MariaDB each get a fresh,
empty database per test; the memory store is checked against the same rows. Rows
are written through the store API with chosen times (the store never reads the
clock), one just older and one just younger than each cutoff, and the tests read
the tables back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from starlette.applications import Starlette

from agentsession import ConfigError, PruneReport, RetentionScheduler, prune
from agentsession.config import AgentSessionConfig, RetentionConfig, load_config
from agentsession.retention import LEASE_NAME, next_batch_size
from agentsession.service import SessionService, now_ms
from agentsession.stores.base import Cutoffs, FeedbackRecord, SessionRecord, TaskRecord
from agentsession.stores.dynamodb import DynamoDBStore
from agentsession.stores.memory import MemoryStore
from agentsession.stores.redis import RedisStore
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.lease import (
    acquire_statement,
    holder_query,
    lease_taken,
    release_statement,
)
from agentsession.stores.sql.schema import chat_tasks, feedback, sessions
from tests.apps import middleware_of
from tests.databases import (
    BACKENDS,
    SQL_BACKENDS,
    dynamodb_dump,
    dynamodb_service,
    dynamodb_table,
    fresh_database,
    redis_namespace,
    redis_service,
    sql_service,
)

pytestmark = pytest.mark.anyio

DAY = 86_400_000
USER = "user-retention"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=BACKENDS)
def any_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def opened(backend: str, tmp_path: Path) -> AsyncIterator[SessionService]:
    """A started service on a brand-new, empty store of ``backend``."""
    if backend == "memory":
        async with SessionService(MemoryStore()) as service:
            yield service
        return
    if backend == "redis":
        async with redis_namespace() as (url, prefix), redis_service(url, prefix) as service:
            yield service
        return
    if backend == "dynamodb":
        async with dynamodb_table() as table, dynamodb_service(*table) as service:
            yield service
        return
    async with fresh_database(backend, tmp_path) as url, sql_service(url) as service:
        yield service


def sql(service: SessionService) -> SqlStore:
    store = service.store
    assert isinstance(store, SqlStore)
    return store


# The data set: one row just older and one just younger than every cutoff.

NOW = now_ms()
TASK_DAYS, FEEDBACK_DAYS, SESSION_DAYS = 10, 5, 30
TCUT, FCUT, SCUT = NOW - TASK_DAYS * DAY, NOW - FEEDBACK_DAYS * DAY, NOW - SESSION_DAYS * DAY

# conversation id -> (updated_time, last_viewed_at, expires_at)
SESSIONS: dict[str, tuple[int, int | None, int | None]] = {
    "s-active": (NOW - 40 * DAY, None, None),  # old, but has young tasks: kept
    "s-idle": (SCUT - 1, None, None),  # idle just longer than the cutoff
    "s-idle-edge": (SCUT, None, None),  # idle exactly that long: kept
    "s-idle-young": (SCUT + 1, None, None),
    "s-viewed": (SCUT - 1, SCUT + 1, None),  # old, but viewed since the cutoff
    "s-old-task": (SCUT - 1, None, None),  # its only task is older than the task cutoff
    "s-kept-by-task": (SCUT - 1, None, None),  # its task is exactly at the task cutoff
    "s-expired": (NOW - 2 * DAY, None, NOW - 1),
    "s-expires-now": (NOW - 2 * DAY, None, NOW),  # expired at NOW (expires_at <= now)
    "s-expires-later": (NOW - 2 * DAY, None, NOW + 1),
}
#: Conversations not updated since the idle cutoff and not expired.
IDLE_CANDIDATES = 5  # s-active, s-idle, s-viewed, s-old-task, s-kept-by-task
# task id -> (conversation, updated_time)
TASKS: dict[str, tuple[str, int]] = {
    "t-old-1": ("s-active", TCUT - 1),
    "t-old-2": ("s-active", TCUT - 1000),
    "t-old-3": ("s-active", TCUT - 5 * DAY),
    "t-edge": ("s-active", TCUT),
    "t-young": ("s-active", TCUT + 1),
    "t-now": ("s-active", NOW),
    "t-idle": ("s-idle", SCUT - 1),
    "t-viewed": ("s-viewed", SCUT - 5),
    "t-mid": ("s-old-task", TCUT - 1),
    "t-keeper": ("s-kept-by-task", TCUT),
    "t-expired": ("s-expired", NOW - DAY),
}
# feedback id -> (task, created_time)
FEEDBACK: dict[str, tuple[str, int]] = {
    "f-old": ("t-young", FCUT - 1),
    "f-edge": ("t-now", FCUT),
    "f-young": ("t-edge", FCUT + 1),
    "f-cascade": ("t-old-1", NOW),  # young, but its task is old: goes with it
    "f-expired": ("t-expired", FCUT - 1),
}


@dataclass(frozen=True)
class Case:
    retention: RetentionConfig
    counts: dict[str, int]  # the PruneReport fields
    gone: set[str]  # every id (any table) that must be gone afterwards


CASES = {
    "all rules": Case(
        RetentionConfig(
            task_retention_days=TASK_DAYS,
            feedback_retention_days=FEEDBACK_DAYS,
            session_retention_days=SESSION_DAYS,
            batch_size=2,
        ),
        {"chat_tasks": 6, "feedback": 2, "expired_sessions": 2, "idle_sessions": 2},
        {
            *("t-old-1", "t-old-2", "t-old-3", "t-idle", "t-viewed", "t-mid"),
            *("f-old", "f-expired", "f-cascade"),
            *("s-expired", "s-expires-now", "t-expired"),
            *("s-idle", "s-old-task"),
        },
    ),
    "zero days keep forever": Case(
        RetentionConfig(
            task_retention_days=0,
            feedback_retention_days=0,
            session_retention_days=0,
            batch_size=2,
        ),
        {"chat_tasks": 0, "feedback": 0, "expired_sessions": 2, "idle_sessions": 0},
        {"s-expired", "s-expires-now", "t-expired", "f-expired"},
    ),
}


async def seed(service: SessionService) -> None:
    """Write the data set through the store, with its times (the store reads no clock)."""
    store = service.store
    for session_id, (updated, viewed, expires) in SESSIONS.items():
        await store.insert_session(
            SessionRecord(session_id, USER, None, None, None, updated, updated, viewed, expires)
        )
    for task_id, (session_id, updated) in TASKS.items():
        saved = await store.save_task(
            TaskRecord(task_id, session_id, USER, "hi", ["bubble"], None, updated, updated)
        )
        assert saved is not None, task_id
    for feedback_id, (task_id, created) in FEEDBACK.items():
        session_id = TASKS[task_id][0]
        record = FeedbackRecord(feedback_id, session_id, task_id, USER, "up", None, created)
        assert await store.save_feedback(record, created) is not None, feedback_id


async def contents(service: SessionService) -> dict[str, set[str]]:
    """Every id in the store, per table; fails if a task or feedback lost its parent."""
    store = service.store
    if isinstance(store, MemoryStore):
        found: dict[str, set[str]] = {"sessions": set(), "chat_tasks": set(), "feedback": set()}
        for session_id, conversation in store._conversations.items():
            found["sessions"].add(session_id)
            found["chat_tasks"].update(conversation.tasks)
            for (task_id, _), item in conversation.feedback.items():
                assert task_id in conversation.tasks, item.id
                found["feedback"].add(item.id)
        assert {task_id for _, task_id in store._task_home} == found["chat_tasks"]
        return found
    if isinstance(store, DynamoDBStore):
        dump = await dynamodb_dump(service)
        assert dump["problems"] == []
        return {
            "sessions": set(dump["sessions"]),
            "chat_tasks": {task_id for _, task_id in dump["chat_tasks"]},
            "feedback": {feedback_id for _, feedback_id in dump["feedback"]},
        }
    if isinstance(store, RedisStore):
        dump = await store._dump()
        assert dump["problems"] == []
        return {
            "sessions": set(dump["sessions"]),
            "chat_tasks": {task_id for _, task_id in dump["chat_tasks"]},
            "feedback": {feedback_id for _, feedback_id in dump["feedback"]},
        }
    async with sql(service).engine.connect() as connection:
        orphans = await connection.scalar(
            select(func.count())
            .select_from(chat_tasks.outerjoin(sessions, sessions.c.id == chat_tasks.c.session_id))
            .where(sessions.c.id.is_(None))
        )
        orphan_feedback = await connection.scalar(
            select(func.count())
            .select_from(
                feedback.outerjoin(chat_tasks, chat_tasks.c.id == feedback.c.task_id).outerjoin(
                    sessions, sessions.c.id == feedback.c.session_id
                )
            )
            .where((chat_tasks.c.id.is_(None)) | (sessions.c.id.is_(None)))
        )
        assert (orphans, orphan_feedback) == (0, 0)
        return {
            table.name: set((await connection.execute(select(table.c.id))).scalars())
            for table in (sessions, chat_tasks, feedback)
        }


def report_counts(report: PruneReport) -> dict[str, int]:
    return {
        "chat_tasks": report.chat_tasks,
        "feedback": report.feedback,
        "expired_sessions": report.expired_sessions,
        "idle_sessions": report.idle_sessions,
    }


@pytest.mark.parametrize("case_name", list(CASES))
async def test_prune_deletes_exactly_the_rows_older_than_each_cutoff(
    any_backend: str, case_name: str, tmp_path: Path
) -> None:
    case = CASES[case_name]
    async with opened(any_backend, tmp_path) as service:
        await seed(service)
        everything = await contents(service)
        assert everything == {
            "sessions": set(SESSIONS),
            "chat_tasks": set(TASKS),
            "feedback": set(FEEDBACK),
        }

        dry = await prune(service, retention=case.retention, now=NOW, dry_run=True)

        assert dry.dry_run
        assert report_counts(dry) == case.counts
        assert await contents(service) == everything  # nothing deleted

        report = await prune(service, retention=case.retention, now=NOW)

        assert report_counts(report) == case.counts
        assert report.complete
        assert report.skipped is None
        assert not report.dry_run
        assert report.counts == {
            "chat_tasks": case.counts["chat_tasks"],
            "feedback": case.counts["feedback"],
            "sessions": case.counts["expired_sessions"] + case.counts["idle_sessions"],
        }
        left = await contents(service)
        assert left == {table: ids - case.gone for table, ids in everything.items()}
        if any_backend in SQL_BACKENDS:  # Redis batches walk users, DynamoDB a Scan
            # Batches of 2: a rule that deletes n rows takes n // 2 + 1 of them (the
            # last one short); a rule that is off takes none. The lease is free again.
            retention = case.retention
            days = {
                "chat_tasks": retention.task_retention_days,
                "feedback": retention.feedback_retention_days,
                "expired_sessions": 1,
                "idle_sessions": retention.session_retention_days,
            }
            # The idle rule walks windows of candidates (not updated since its cutoff),
            # deleting the idle ones: its batches count the candidates.
            walked = {**case.counts, "idle_sessions": IDLE_CANDIDATES}
            expected = sum(n // 2 + 1 for rule, n in walked.items() if days[rule])
            assert report.batches == expected
            async with sql(service).engine.connect() as connection:
                holder = (await connection.execute(holder_query(LEASE_NAME))).one()
            assert holder.expires_at <= now_ms()

        # A second run finds nothing more.
        again = await prune(service, retention=case.retention, now=NOW)
        assert again.total == 0
        assert await contents(service) == left


async def test_prune_from_a_config_opens_and_closes_its_own_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'config.db'}"
    config = AgentSessionConfig.from_mapping(
        {
            "session_service": {"type": "sql", "database_url": url},
            "data_retention": {
                "task_retention_days": TASK_DAYS,
                "feedback_retention_days": FEEDBACK_DAYS,
                "batch_size": 3,
            },
        },
        env={},
    )
    async with sql_service(url) as service:
        await seed(service)
    report = await prune(config, now=NOW)
    assert (report.chat_tasks, report.feedback, report.expired_sessions) == (6, 2, 2)
    async with sql_service(url) as service:
        left = await contents(service)
    assert left["chat_tasks"] == set(TASKS) - {
        *("t-old-1", "t-old-2", "t-old-3", "t-idle", "t-viewed", "t-mid", "t-expired")
    }


# The lease


async def test_the_lease_is_one_conditional_statement(sql_backend: str, tmp_path: Path) -> None:
    async with fresh_database(sql_backend, tmp_path) as url, sql_service(url) as service:
        store = sql(service)

        async def take(owner: str, until: int, now: int) -> bool:
            statement = acquire_statement(store.dialect, "test", owner, until, now)
            rows, _, last_id = await store._run(statement, fetch=store.dialect != "mysql")
            return lease_taken(store.dialect, rows, last_id)

        async def row() -> tuple[str, int]:
            rows, _, _ = await store._run(holder_query("test"), fetch=True)
            return rows[0][0], rows[0][1]

        assert await take("a", 1000, 0)  # a new row
        assert await row() == ("a", 1000)
        assert await take("a", 1000, 10)  # renewed with the same values (MySQL: unchanged)
        assert await take("a", 1500, 20)  # renewed
        assert not await take("b", 2000, 30)  # a holds it
        assert await row() == ("a", 1500)
        assert not await take("b", 2000, 1499)
        assert await take("b", 2000, 1500)  # a's lease expired at 1500
        assert await row() == ("b", 2000)
        assert not await take("a", 2500, 1600)  # a lost it
        await store._run(release_statement("test", "a", 1700))  # not a's to release
        assert await row() == ("b", 2000)
        await store._run(release_statement("test", "b", 1700))
        assert await row() == ("b", 1700)
        assert await take("a", 2500, 1700)
        assert await row() == ("a", 2500)


async def test_prune_skips_while_another_instance_holds_the_lease(
    sql_backend: str, tmp_path: Path
) -> None:
    async with fresh_database(sql_backend, tmp_path) as url, sql_service(url) as service:
        store = sql(service)
        await seed(service)
        until = now_ms() + 60_000
        await store._run(acquire_statement(store.dialect, LEASE_NAME, "other:1", until, now_ms()))
        retention = CASES["all rules"].retention

        report = await prune(service, retention=retention, now=NOW)

        assert report.skipped is not None
        assert "other:1" in report.skipped
        assert report.total == 0
        assert (await contents(service))["chat_tasks"] == set(TASKS)
        # A dry run takes no lease: it still counts.
        dry = await prune(service, retention=retention, now=NOW, dry_run=True)
        assert dry.chat_tasks == 6


# Several instances


async def add_old_tasks(store: SqlStore, first: int, count: int, *, session_id: str) -> None:
    """``count`` chat tasks two days old (one per millisecond), in one transaction."""
    base = now_ms() - 2 * DAY
    rows = [
        {
            "id": f"task-{i:07d}",
            "session_id": session_id,
            "user_id": USER,
            "user_message": None,
            "message_bubbles": "[]",
            "task_metadata": None,
            "created_time": base + i,
            "updated_time": base + i,
        }
        for i in range(first, first + count)
    ]
    async with store.engine.connect() as raw:
        level = "SERIALIZABLE" if store.dialect == "sqlite" else "READ COMMITTED"
        connection = await raw.execution_options(isolation_level=level)
        async with connection.begin():
            await connection.execute(chat_tasks.insert(), rows)


async def add_session(store: SqlStore, session_id: str) -> None:
    now = now_ms()
    await store.insert_session(
        SessionRecord(session_id, USER, None, None, None, now, now, None, None)
    )


async def count_tasks(store: SqlStore) -> int:
    async with store.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(chat_tasks)) or 0)


async def lease_row(store: SqlStore) -> tuple[str, int] | None:
    async with store.engine.connect() as connection:
        row = (await connection.execute(holder_query(LEASE_NAME))).first()
    return None if row is None else (row[0], int(row[1]))


@asynccontextmanager
async def worker(url: str, log: Path, *options: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``tests.retention_worker`` process; stopped with SIGTERM (if alive) on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.retention_worker",
        url,
        str(log),
        *options,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert line.startswith(b"ready"), (line, await process.stderr.read())  # type: ignore[union-attr]
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        if process.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"worker exited with {process.returncode}: {stderr.decode()}")


@dataclass(frozen=True)
class Run:
    pid: str
    start: float
    end: float
    message: str


def runs_in(log: Path) -> tuple[list[Run], list[str]]:
    """The runs a worker's log records (start to summary), and its skipped/failed lines."""
    runs: list[Run] = []
    other: list[str] = []
    started: dict[str, float] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        stamp, pid, message = line.split(" ", 2)
        if message.startswith("retention run started"):
            started[pid] = float(stamp)
        elif message.startswith("retention:"):
            runs.append(Run(pid, started.pop(pid), float(stamp), message))
        else:
            other.append(message)
    return runs, other


async def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_two_instances_never_prune_at_the_same_time(sql_backend: str, tmp_path: Path) -> None:
    async with fresh_database(sql_backend, tmp_path) as url, sql_service(url) as service:
        store = sql(service)
        await add_session(store, "s-many")
        await add_old_tasks(store, 0, 400, session_id="s-many")
        logs = [tmp_path / "one.log", tmp_path / "two.log"]
        options = ("--batch-size", "10", "--interval-hours", "0.00005", "--pause", "1")
        async with worker(url, logs[0], *options), worker(url, logs[1], *options):
            # Keep old rows coming, so that both instances keep finding work.
            for round_ in range(1, 11):
                await asyncio.sleep(0.2)
                await add_old_tasks(store, round_ * 1000, 100, session_id="s-many")

            async def drained() -> bool:
                return await count_tasks(store) == 0

            await wait_until(drained, 20, "the old rows to be pruned")

        runs = []
        for log in logs:
            found, other = runs_in(log)
            assert found, f"{log.name} never ran"
            assert not [line for line in other if "failed" in line or "lost" in line], other
            runs.extend(found)
    runs.sort(key=lambda run: run.start)
    for before, after in itertools.pairwise(runs):
        assert after.start >= before.end, f"overlapping runs: {before} and {after}"
    assert sum(int(run.message.split()[2]) for run in runs) == 1400


async def test_a_crashed_holder_blocks_others_only_until_its_lease_expires(
    sql_backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentsession.retention")
    async with fresh_database(sql_backend, tmp_path) as url, sql_service(url) as service:
        store = sql(service)
        await add_session(store, "s-many")
        await add_old_tasks(store, 0, 3000, session_id="s-many")
        options = ("--batch-size", "10", "--pause", "3", "--lease-ttl", "1.5")
        async with worker(url, tmp_path / "crash.log", *options) as crashing:

            async def busy() -> bool:
                return await count_tasks(store) < 2900

            await wait_until(busy, 20, "the first instance to be mid-run")
            crashing.kill()
            await crashing.wait()
        held = await lease_row(store)
        assert held is not None
        crashed_owner, crashed_until = held
        assert crashed_until > now_ms()  # still held: the crash let nothing go
        left_behind = await count_tasks(store)
        assert left_behind > 0

        retention = RetentionConfig(task_retention_days=1, cleanup_interval_hours=0.0001)
        scheduler = RetentionScheduler(service, retention, startup_jitter=0, lease_ttl=1.5)
        await scheduler.start()
        try:

            async def drained() -> bool:
                return await count_tasks(store) == 0

            await wait_until(drained, 20, "the second instance to take over")
        finally:
            await scheduler.stop()
        assert scheduler.last_report is not None
    messages = [(record.created, record.getMessage()) for record in caplog.records]
    skipped = [stamp for stamp, text in messages if crashed_owner in text]
    assert skipped, "the second instance never found the lease held"
    took_over = min(stamp for stamp, text in messages if text.startswith("retention run started"))
    assert took_over * 1000 >= crashed_until
    deleted = sum(
        int(text.split()[2]) for _, text in messages if text.startswith("retention: deleted")
    )
    assert deleted == left_behind


async def test_shutdown_mid_run_returns_within_a_second_keeping_finished_batches(
    sql_backend: str, tmp_path: Path
) -> None:
    total, batch = 20_000, 100
    async with fresh_database(sql_backend, tmp_path) as url, sql_service(url) as service:
        store = sql(service)
        await add_session(store, "s-many")
        for first in range(0, total, 5000):
            await add_old_tasks(store, first, 5000, session_id="s-many")
        retention = RetentionConfig(task_retention_days=1, batch_size=batch)
        scheduler = RetentionScheduler(service, retention, startup_jitter=0, pause=1.0)
        await scheduler.start()

        async def busy() -> bool:
            return await count_tasks(store) <= total - 5 * batch

        await wait_until(busy, 20, "the run to be under way")
        started = time.monotonic()
        await scheduler.stop()
        assert time.monotonic() - started < 1.0
        assert not scheduler.running

        left = await count_tasks(store)
        assert 0 < left < total
        assert (total - left) % batch == 0  # whole batches, each committed
        async with store.engine.connect() as connection:
            kept = set((await connection.execute(select(chat_tasks.c.id))).scalars())
        # Oldest first: what is left is exactly the youngest rows.
        assert kept == {f"task-{i:07d}" for i in range(total - left, total)}
        held = await lease_row(store)
        assert held is not None
        assert held[1] <= now_ms()


async def test_shutdown_while_a_batch_waits_for_a_lock_returns_within_a_second(
    sql_backend: str, tmp_path: Path
) -> None:
    """The batch in flight is cancelled: it commits whole or not at all."""
    total, batch = 1000, 100
    async with fresh_database(sql_backend, tmp_path) as url, sql_service(url) as service:
        store = sql(service)
        await add_session(store, "s-many")
        await add_old_tasks(store, 0, total, session_id="s-many")
        lock = text("UPDATE chat_tasks SET user_message = 'mine' WHERE id = 'task-0000500'")
        async with store.engine.connect() as raw:
            # Another transaction holds a row of the sixth batch (on SQLite: the database).
            level = "SERIALIZABLE" if store.dialect == "sqlite" else "READ COMMITTED"
            blocker = await raw.execution_options(isolation_level=level)
            if store.dialect == "sqlite":
                await blocker.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await blocker.begin()
            await blocker.execute(lock)
            retention = RetentionConfig(task_retention_days=1, batch_size=batch)
            scheduler = RetentionScheduler(service, retention, startup_jitter=0)
            await scheduler.start()
            waiting = total if store.dialect == "sqlite" else total - 5 * batch

            async def blocked() -> bool:
                return await count_tasks(store) == waiting

            await wait_until(blocked, 10, "the run to wait for the lock")
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await scheduler.stop()
            assert time.monotonic() - started < 1.0
            await blocker.rollback()
        await asyncio.sleep(0.5)  # a statement already sent may still finish
        left = await count_tasks(store)
        assert left in (waiting, waiting - batch)
        assert left % batch == 0


@pytest.mark.parametrize("limit", [100, 2], ids=["last-batch", "full-batch"])
@pytest.mark.parametrize("network_sql", ["postgresql", "mysql"])
async def test_a_rating_saved_while_its_task_is_pruned_goes_with_the_task(
    network_sql: str, limit: int, tmp_path: Path
) -> None:
    """Feedback has no foreign key to its task: the store keeps the link.

    The rating's statement is held after it has read its (old) task: another
    transaction holds an uncommitted rating of the same task, so the upsert waits on
    the unique key. The prune's batch then starts on that task. When the blocker rolls
    back, the rating lands; the batch, which had to wait for the task's row lock, must
    take it along: no feedback without its task is left.
    """
    async with fresh_database(network_sql, tmp_path) as url, sql_service(url) as service:
        store = sql(service)
        await add_session(store, "s-rated")
        await add_old_tasks(store, 0, 3, session_id="s-rated")
        now = now_ms()
        rating = FeedbackRecord("f-racing", "s-rated", "task-0000001", USER, "up", None, now)
        insert = text(
            "INSERT INTO feedback (id, session_id, task_id, user_id, rating, created_time) "
            f"VALUES ('f-blocker', 's-rated', 'task-0000001', '{USER}', 'down', {now})"
        )
        async with store.engine.connect() as raw:
            blocker = await raw.execution_options(isolation_level="READ COMMITTED")
            await blocker.begin()
            await blocker.execute(insert)
            saving = asyncio.create_task(store.save_feedback(rating, now))
            await asyncio.sleep(0.5)
            assert not saving.done()
            cut = Cutoffs(now=now, tasks=now - DAY, feedback=None, idle=None)
            pruning = asyncio.create_task(store.prune_batch("chat_tasks", cut, None, limit))
            await asyncio.sleep(0.5)
            assert not pruning.done()
            await blocker.rollback()
        assert await asyncio.wait_for(saving, 10) == rating
        deleted, _ = await asyncio.wait_for(pruning, 10)
        assert deleted == min(3, limit)
        assert await count_tasks(store) == 3 - deleted
        async with store.engine.connect() as connection:
            left = (await connection.execute(select(feedback.c.id))).fetchall()
        assert left == []


async def test_a_rating_of_a_pruned_task_is_refused(sql_backend: str, tmp_path: Path) -> None:
    """The other order: the task went first, so the rating finds nothing to rate."""
    async with fresh_database(sql_backend, tmp_path) as url, sql_service(url) as service:
        store = sql(service)
        await add_session(store, "s-rated")
        await add_old_tasks(store, 0, 2, session_id="s-rated")
        now = now_ms()
        cut = Cutoffs(now=now, tasks=now - DAY, feedback=None, idle=None)
        assert await store.prune_batch("chat_tasks", cut, None, 100) == (2, None)
        rating = FeedbackRecord("f-late", "s-rated", "task-0000001", USER, "up", None, now)
        assert await store.save_feedback(rating, now) is None
        async with store.engine.connect() as connection:
            assert (await connection.execute(select(feedback.c.id))).fetchall() == []


# The scheduler


async def test_a_failed_run_is_logged_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentsession.retention")
    url = f"sqlite:///{tmp_path / 'flaky.db'}"
    async with sql_service(url) as service:
        store = sql(service)
        await add_session(store, "s-many")
        await add_old_tasks(store, 0, 50, session_id="s-many")
        async with store.engine.connect() as connection:
            await connection.execute(text("ALTER TABLE chat_tasks RENAME TO chat_tasks_away"))
        retention = RetentionConfig(task_retention_days=1, cleanup_interval_hours=0.0001)
        scheduler = RetentionScheduler(service, retention, startup_jitter=0)
        await scheduler.start()
        try:

            async def failed() -> bool:
                return any(record.levelno == logging.WARNING for record in caplog.records)

            await wait_until(failed, 10, "a failed run")
            async with store.engine.connect() as connection:
                await connection.execute(text("ALTER TABLE chat_tasks_away RENAME TO chat_tasks"))

            async def drained() -> bool:
                return await count_tasks(store) == 0

            await wait_until(drained, 10, "a later run to succeed")
            assert scheduler.running
        finally:
            await scheduler.stop()
    warning = next(record for record in caplog.records if record.levelno == logging.WARNING)
    assert "retention run failed" in warning.getMessage()
    assert "no such table" in warning.getMessage()  # the cause
    info = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention: ")]
    assert any(line.startswith("retention: deleted 50 chat tasks") for line in info)
    assert all(" s" in line for line in info)  # each with its duration


async def test_the_middleware_starts_and_stops_the_scheduler(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    async with sql_service(url) as service:
        await add_session(sql(service), "s-many")
        await add_old_tasks(sql(service), 0, 30, session_id="s-many")
    config = AgentSessionConfig.from_mapping(
        {
            "session": {"secret_key": "k" * 48},
            "session_service": {"type": "sql", "database_url": url},
            "data_retention": {"task_retention_days": 1, "cleanup_interval_hours": 0.001},
        },
        env={},
    )
    from agentsession import SessionMiddleware

    app = Starlette()
    app.add_middleware(SessionMiddleware, config=config)
    app.build_middleware_stack()
    middleware = middleware_of(app)
    scheduler = middleware.retention
    assert scheduler is not None
    scheduler.startup_jitter = 0
    assert not scheduler.running

    await middleware.lifecycle.startup()
    assert scheduler.running
    store = sql(middleware.service)

    async def drained() -> bool:
        return await count_tasks(store) == 0

    await wait_until(drained, 10, "the scheduler's first run")
    await middleware.lifecycle.shutdown()
    assert not scheduler.running

    disabled = AgentSessionConfig.from_mapping(
        {"session": {"secret_key": "k" * 48}, "data_retention": {"enabled": False}}, env={}
    )
    assert SessionMiddleware(Starlette(), config=disabled).retention is None


async def test_on_the_memory_store_the_scheduler_sweeps_expired_conversations() -> None:
    store = MemoryStore()
    service = SessionService(store)
    now = now_ms()
    await store.insert_session(SessionRecord("gone", USER, None, None, None, now, now, None, now))
    await store.insert_session(SessionRecord("kept", USER, None, None, None, now, now, None, None))
    scheduler = RetentionScheduler(service, RetentionConfig(), startup_jitter=0)
    await scheduler.start()
    try:
        for _ in range(100):
            if scheduler.runs:
                break
            await asyncio.sleep(0.01)
    finally:
        await scheduler.stop()
    assert scheduler.last_report is not None
    assert scheduler.last_report.expired_sessions == 1
    assert list(store._conversations) == ["kept"]


# Configuration


def test_environment_overrides_of_data_retention() -> None:
    env = {
        "DATA_RETENTION_ENABLED": "false",
        "DATA_RETENTION_TASK_DAYS": "7",
        "DATA_RETENTION_FEEDBACK_DAYS": "0",
        "DATA_RETENTION_SESSION_DAYS": "365",
        "DATA_RETENTION_CLEANUP_HOURS": "0.25",
        "DATA_RETENTION_BATCH_SIZE": "500",
    }
    assert load_config(env=env).data_retention == RetentionConfig(
        enabled=False,
        task_retention_days=7,
        feedback_retention_days=0,
        session_retention_days=365,
        cleanup_interval_hours=0.25,
        batch_size=500,
    )


@pytest.mark.parametrize(
    ("env", "section", "named"),
    [
        ({"DATA_RETENTION_TASK_DAYS": "-1"}, {}, "DATA_RETENTION_TASK_DAYS"),
        ({"DATA_RETENTION_BATCH_SIZE": "0"}, {}, "DATA_RETENTION_BATCH_SIZE"),
        ({"DATA_RETENTION_CLEANUP_HOURS": "0"}, {}, "DATA_RETENTION_CLEANUP_HOURS"),
        ({"DATA_RETENTION_ENABLED": "maybe"}, {}, "DATA_RETENTION_ENABLED"),
        ({}, {"feedback_retention_days": -3}, "data_retention.feedback_retention_days"),
        ({}, {"session_retention_days": "soon"}, "data_retention.session_retention_days"),
        ({}, {"batch_size": 0}, "data_retention.batch_size"),
        ({}, {"cleanup_interval_hours": -1}, "data_retention.cleanup_interval_hours"),
        ({}, {"keep_days": 3}, "data_retention.keep_days"),
    ],
)
def test_bad_retention_settings_name_the_key(
    env: dict[str, str], section: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        AgentSessionConfig.from_mapping({"data_retention": section}, env=env)


def test_retention_is_exported() -> None:
    import agentsession

    assert {"PruneReport", "RetentionScheduler", "prune"} <= set(agentsession.__all__)


@pytest.mark.parametrize(
    ("size", "elapsed", "expected"),
    [
        (1000, 0.010, 1000),  # on pace or faster: as big as allowed
        (1000, 0.040, 500),  # twice too slow: half
        (1000, 0.025, 800),  # a little slow: a little smaller, not half
        (1000, 1.000, 100),  # a stall: never below the smallest
        (300, 0.005, 600),  # fast again: at most twice as big each time
        (300, 0.0, 600),  # too fast to time
    ],
)
def test_each_batch_is_sized_to_take_the_batch_time(
    size: int, elapsed: float, expected: int
) -> None:
    assert next_batch_size(size, elapsed, 100, 1000) == expected
