"""Pruning a million old chat tasks: rows per second, the longest batch, and the cost to the app.

What is measured
----------------
For each backend (PostgreSQL and MariaDB by default; SQLite on request) the benchmark
makes a brand-new database (``agentsession_bench_retention_<random>``, created with
asyncpg / aiomysql and dropped at the end), enters ``SessionService.from_config(...)``
(which runs the migrations) and bulk-loads, with ``INSERT ... SELECT`` over
``generate_series`` (PostgreSQL) or the ``seq_0_to_N`` sequence engine (MariaDB):

* ``--rows`` chat tasks between 31 and 60 days old, in 10,000 conversations, with
  realistic payloads (a 150-character message, ~300 characters of JSON bubbles, a
  small metadata object). Their ids are ``md5`` hashes, so that primary-key order has
  nothing to do with age (as with real random ids): a batch deletes rows spread over
  the whole primary key;
* feedback on one task in sixteen (each batch of tasks deletes their feedback in its
  transaction; the run fails if any is left).

PostgreSQL then gets ``VACUUM (ANALYZE)`` and ``CHECKPOINT``; MariaDB ``ANALYZE TABLE``
and a wait until InnoDB has written its dirty pages; then the file system is synced, so
that writing the load out does not land in a measured phase. The app's load is
``--writers`` coroutines, each with a conversation of its own, calling
``SessionService.save_task`` (a new task each time) on a fixed schedule, ``--rate``
calls per second in all; a call's latency runs from its scheduled time to its answer,
so a call held up behind a slow one counts its wait. Three phases, one after the
other, in one process and one event loop (as in an app instance that runs the
scheduler):

1. *before*: the writers alone for ``--seconds``;
2. *during*: ``prune()`` (``task_retention_days=1, feedback_retention_days=1,
   session_retention_days=30, batch_size=--batch-size``, ``pause=--pause``) while the
   writers run; the phase ends when the prune does;
3. *after*: the writers alone again for ``--seconds``;
4. *control* (unless ``--no-cpu-control``): the writers for as long as the prune took,
   beside a load that only burns database CPU at the prune's duty cycle: statements
   as long as the prune's mean batch, with the same rests, reading and writing no table.

Reported: tasks deleted per second of the prune, the longest single batch
(``PruneReport.longest_batch``), and ``save_task`` p50 / p99 in each phase, against
issue 17's targets: a million tasks pruned in under 60 s, and the p99 during the prune
at most 1.1x the p99 beside the control (a miss is marked FAIL; the exit status does
not change). The ratio to the p99 before is shown too. Every old task must be gone and
every task the writers saved must still be there, or the run stops with an error. The
plans of each rule's batch statements are taken on the loaded database before the prune
(see the section text).

After the report, a second table (printed to stderr, not written by ``--markdown``)
shows where the tail comes from: the share of the prune's time its statements took;
the round trip of ``save_task``'s one statement (the database's answer, commit
included, timed by SQLAlchemy's cursor events) before and during the prune; and the
calls during the prune split into those that overlapped one of the prune's statements
and the rest; and the full garbage collections of this process in each phase.
``--gc-freeze`` calls ``gc.freeze()`` before the phases, so that those collections walk
only newer objects.

Run it from the repository root::

    .venv/bin/python bench/retention.py --rows 100000 --seconds 10   # a quick run
    .venv/bin/python bench/retention.py --markdown docs/benchmarks.md

``--markdown PATH`` writes (or replaces) the "## Retention (bench/retention.py)" section
of PATH. Server URLs: ``--postgres-url`` / ``--mysql-url``, else
``AGENTSESSION_TEST_POSTGRES_URL`` / ``AGENTSESSION_TEST_MYSQL_URL``, else a local server.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import os
import platform
import re
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text

from agentsession.config import RetentionConfig, ServiceConfig
from agentsession.retention import BATCH_PAUSE, prune
from agentsession.service import SessionService, now_ms
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.prune import (
    RULES,
    Cutoffs,
    boundary_query,
    delete_batch,
    delete_ids,
    delete_range,
    delete_tasks,
    idle_window,
    orphaned_feedback,
    select_batch,
)
from agentsession.stores.sql.schema import chat_tasks, feedback
from common import (
    LABELS,
    backend_list,
    buffer_pool,
    command_line,
    fresh_database,
    positive_int,
    publish,
    server_settings,
    server_version,
    version_of,
)

SECTION_TITLE = "## Retention (bench/retention.py)"
BEGIN_MARKER = "<!-- bench/retention.py: begin (generated, rewritten by --markdown) -->"
END_MARKER = "<!-- bench/retention.py: end -->"

DAY = 86_400_000
CONVERSATIONS = 10_000
LOAD_CHUNK = 100_000
#: Issue 17's targets: pruned in under SPEED_TARGET seconds per 1,000,000 tasks, and
#: save_task's p99 during the prune ≤ TARGET x its p99 beside the CPU-only control.
SPEED_TARGET = 60.0
TARGET = 1.1
MESSAGE = "Can you summarise the quarterly report and list the three biggest risks? " * 2
BUBBLES = (
    '[{"type":"text","text":"' + "Here is a summary of the report. " * 8 + '"},'
    '{"type":"status","text":"done","tokens":412}]'
)
METADATA = '{"agent":"analyst","model":"stand-in","latency_ms":812}'


class BenchError(RuntimeError):
    """A wrong answer (rows left behind, a young row gone): the run stops."""


# --------------------------------------------------------------------------- databases


async def execute(store: SqlStore, sql: str, **params: Any) -> Any:
    async with store.engine.connect() as connection:
        return await connection.execute(text(sql), params)


async def bulk_load(store: SqlStore, rows: int, base: int) -> float:
    """Conversations, ``rows`` old tasks (md5 ids) and feedback on one task in sixteen."""
    started = time.perf_counter()
    dialect = store.dialect
    recent = now_ms() - 3_600_000
    step = 29 * DAY // rows  # ages spread evenly over 29 days
    payload = {"msg": MESSAGE, "bubbles": BUBBLES, "meta": METADATA, "base": base, "step": step}
    if dialect == "postgresql":
        numbers = "generate_series(CAST(:lo AS INTEGER), CAST(:hi AS INTEGER)) AS g(n)"
        task_id, session_of = "md5(n::text)", "'old-s-' || (n % 10000)"
        user_of = "'old-user-' || (n % 10000 % 100)"
    elif dialect == "mysql":
        numbers = "seq_{lo}_to_{hi} AS g"
        task_id, session_of = "MD5(g.seq)", "CONCAT('old-s-', g.seq % 10000)"
        user_of = "CONCAT('old-user-', g.seq % 10000 % 100)"
    else:
        numbers = (
            "(WITH RECURSIVE g(n) AS (SELECT :lo UNION ALL SELECT n + 1 FROM g WHERE n < :hi) "
            "SELECT n FROM g) AS g"
        )
        task_id = "lower(hex(randomblob(16)))"
        session_of, user_of = "'old-s-' || (n % 10000)", "'old-user-' || (n % 10000 % 100)"
    n = "g.seq" if dialect == "mysql" else "n"
    # 64-bit arithmetic: asyncpg would type the parameters as 32-bit integers.
    age = f"CAST(:base AS BIGINT) + CAST({n} AS BIGINT) * :step"
    if dialect != "postgresql":
        age = f":base + {n} * :step"

    def over(sql: str, lo: int, hi: int) -> tuple[str, dict[str, Any]]:
        if dialect == "mysql":
            return sql.replace(":numbers", numbers.format(lo=lo, hi=hi)), payload
        return sql.replace(":numbers", numbers), {**payload, "lo": lo, "hi": hi}

    sql, params = over(
        "INSERT INTO sessions (id, user_id, state, version, created_time, updated_time) "
        f"SELECT {session_of}, {user_of}, '{{}}', 0, {recent}, {recent} FROM :numbers",
        0,
        CONVERSATIONS - 1,
    )
    await execute(store, sql, **params)
    for lo in range(0, rows, LOAD_CHUNK):
        hi = min(rows, lo + LOAD_CHUNK) - 1
        sql, params = over(
            "INSERT INTO chat_tasks (id, session_id, user_id, user_message, message_bubbles, "
            "task_metadata, created_time, updated_time) "
            f"SELECT {task_id}, {session_of}, {user_of}, :msg, :bubbles, :meta, "
            f"{age}, {age} FROM :numbers",
            lo,
            hi,
        )
        await execute(store, sql, **params)
        print(f"  loaded {hi + 1:,} tasks", file=sys.stderr)
    await execute(
        store,
        "INSERT INTO feedback (id, session_id, task_id, user_id, rating, comment, created_time) "
        "SELECT id, session_id, id, user_id, 'up', NULL, created_time FROM chat_tasks "
        + ("WHERE substr(id, 1, 1) = '0'" if dialect != "mysql" else "WHERE LEFT(id, 1) = '0'"),
    )
    async with store.engine.connect() as connection:
        if dialect == "postgresql":
            await connection.exec_driver_sql("VACUUM (ANALYZE) sessions, chat_tasks, feedback")
        elif dialect == "mysql":
            result = await connection.exec_driver_sql(
                "ANALYZE TABLE sessions, chat_tasks, feedback"
            )
            result.fetchall()
    await settle(store)
    return time.perf_counter() - started


async def settle(store: SqlStore) -> None:
    """Write the load out to disk, so that flushing it does not land in a measured window.

    PostgreSQL: ``CHECKPOINT``; MariaDB: have InnoDB write its dirty pages (waiting up to 5
    minutes); then ``sync`` the file system.
    """
    async with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            await connection.exec_driver_sql("CHECKPOINT")
        elif store.dialect == "mysql":
            # InnoDB flushes lazily, never below its low-water mark when idle: ask it to
            # flush everything for now, and put its setting back afterwards.
            result = await connection.exec_driver_sql("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
            setting = result.scalar()
            await connection.exec_driver_sql("SET GLOBAL innodb_max_dirty_pages_pct = 0")
            try:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    result = await connection.exec_driver_sql(
                        "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'"
                    )
                    row: Any = result.fetchall()[0]
                    if int(row[1]) < 100:
                        break
                    await asyncio.sleep(0.5)
            finally:
                await connection.exec_driver_sql(
                    f"SET GLOBAL innodb_max_dirty_pages_pct = {float(setting or 90)}"
                )
    await asyncio.to_thread(os.sync)


async def count(store: SqlStore, table: Any, *where: Any) -> int:
    async with store.engine.connect() as connection:
        found = await connection.scalar(select(func.count()).select_from(table).where(*where))
    return int(found or 0)


# --------------------------------------------------------------------------- plans


def literal(statement: Any, store: SqlStore) -> str:
    dialect = store.engine.sync_engine.dialect
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


async def plans(store: SqlStore, cut: Cutoffs, size: int, mid: int) -> dict[str, str]:
    """Each rule's batch statement explained on the loaded database (nothing deleted)."""
    found: dict[str, str] = {}
    async with store.engine.connect() as connection:
        for rule in RULES:
            for label, after in (("first batch", None), ("mid-run batch", mid)):
                if after is not None and rule != "chat_tasks":
                    continue
                name = f"{rule}, {label}"
                if rule == "idle_sessions":
                    # A window of candidates by index range; the idle ones go by id.
                    window = idle_window(store.tables, cut, None, size)
                    rows = (await connection.execute(window)).fetchall()
                    parts = ["window of candidates:", await explain(connection, window, store)]
                    if rows:
                        doomed = delete_ids(store.tables, rule, cut, rows)
                        parts += ["DELETE by id:", await explain(connection, doomed, store)]
                    found[name] = "\n".join(parts)
                elif store.dialect == "postgresql":
                    if rule == "chat_tasks":
                        batch = delete_tasks(store.tables, store.dialect, cut, after, size)
                    else:
                        batch = delete_batch(store.tables, store.dialect, rule, cut, after, size)
                    found[name] = await explain(connection, batch, store)
                elif store.dialect == "mysql":
                    query = boundary_query(store.tables, rule, cut, after, size)
                    last = (await connection.execute(query)).fetchall()
                    parts = [
                        "SELECT (the key of the batch's last row), ANALYZE:",
                        await mysql_explain(connection, literal(query, store), analyze=True),
                    ]
                    if last:
                        sql = literal(
                            delete_range(store.tables, rule, cut, after, int(last[0][0]), size),
                            store,
                        )
                        parts += ["DELETE, EXPLAIN:", await mysql_explain(connection, sql)]
                    found[name] = "\n".join(parts)
                if rule == "chat_tasks" and store.dialect != "sqlite":
                    # The batch's second statement: the feedback its tasks leave behind.
                    some = select_batch(store.tables, rule, cut, after, size)
                    ids = [str(row[0]) for row in (await connection.execute(some)).fetchall()]
                    if ids:
                        orphans = orphaned_feedback(store.tables, store.dialect, ids)
                        found[name] += "\n\nthen the feedback left without its task:\n"
                        found[name] += await explain(connection, orphans, store)
    if store.dialect == "postgresql":
        # The real thing, rolled back: rows actually read by the first chat-task batch.
        async with store.engine.connect() as raw:
            transaction = await raw.execution_options(isolation_level="READ COMMITTED")
            await transaction.begin()
            sql = literal(delete_tasks(store.tables, store.dialect, cut, None, size), store)
            prefix = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
            rows = await transaction.exec_driver_sql(prefix + sql)
            found["chat_tasks, first batch, EXPLAIN ANALYZE (rolled back)"] = "\n".join(
                str(row[0]) for row in rows.fetchall()
            )
            await transaction.rollback()
    return found


async def explain(connection: Any, statement: Any, store: SqlStore) -> str:
    """``statement``'s plan, in the form used for its database."""
    sql = literal(statement, store)
    if store.dialect == "mysql":
        return await mysql_explain(connection, sql)
    if store.dialect == "sqlite":
        rows = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
        return "\n".join(str(row[-1]) for row in rows.fetchall())
    rows = await connection.exec_driver_sql("EXPLAIN (COSTS OFF) " + sql)
    return "\n".join(abridged(str(row[0])) for row in rows.fetchall())


def abridged(line: str) -> str:
    """A plan line with a long array literal (the batch's ids) cut to its size."""
    return re.sub(
        r"'\{([^}]{200,})\}'",
        lambda found: f"'{{<{found.group(1).count(',') + 1} ids>}}'",
        line,
    )


async def mysql_explain(connection: Any, sql: str, *, analyze: bool = False) -> str:
    """MariaDB's plan; ``analyze`` runs the statement too (r_rows: rows actually read)."""
    result = await connection.exec_driver_sql(("ANALYZE " if analyze else "EXPLAIN ") + sql)
    keys = list(result.keys())
    columns = ("select_type", "table", "type", "key", "rows", "r_rows", "Extra")
    wanted = [k for k in columns if k in keys]
    table = [wanted] + [
        ["NULL" if row[keys.index(k)] is None else str(row[keys.index(k)]) for k in wanted]
        for row in result.fetchall()
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(wanted))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


# --------------------------------------------------------------------------- load


@dataclass
class Writers:
    """Coroutines calling ``save_task`` on a fixed schedule; latencies in seconds."""

    service: SessionService
    count: int
    rate: float
    saved: int = 0
    latencies: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # each call's start and end on
    ends: list[float] = field(default_factory=list)  # the loop's clock (floats: no GC load)
    conversations: list[tuple[str, str]] = field(default_factory=list)

    async def setup(self) -> None:
        for k in range(self.count):
            user = f"bench-writer-{k}"
            record = await self.service.create_session(user, name="live")
            self.conversations.append((user, record.id))

    async def run(self, until: asyncio.Event | float) -> list[float]:
        """Save until ``until`` is set (or for that many seconds); this phase's latencies.

        ``starts`` and ``ends`` get each call's start and end on the event loop's clock.
        """
        self.latencies, self.starts, self.ends = [], [], []
        stop = until if isinstance(until, asyncio.Event) else asyncio.Event()
        timer = None
        if not isinstance(until, asyncio.Event):
            timer = asyncio.get_running_loop().call_later(until, stop.set)
        await asyncio.gather(*(self._one(k, stop) for k in range(self.count)))
        if timer is not None:
            timer.cancel()
        return self.latencies

    async def _one(self, k: int, stop: asyncio.Event) -> None:
        user, conversation = self.conversations[k]
        interval = self.count / self.rate
        loop = asyncio.get_running_loop()
        due = loop.time() + interval * k / self.count
        while not stop.is_set():
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.saved += 1
            started = loop.time()
            await self.service.save_task(
                user,
                conversation,
                f"live-{k}-{self.saved}",
                user_message=MESSAGE,
                message_bubbles=[{"type": "text", "text": "reply " * 40}],
                task_metadata={"n": self.saved},
            )
            ended = loop.time()
            self.latencies.append(ended - due)
            self.starts.append(started)
            self.ends.append(ended)
            due += interval


class Probe:
    """Watches one phase after another: statement round trips and garbage collections.

    Statements are timed on the wire (SQLAlchemy's cursor events, monotonic clock). A
    ``save_task`` is one ``INSERT INTO chat_tasks`` in autocommit, so its round trip is
    the database's time to answer, commit included; every other statement during the
    prune is the prune's, one at a time, and marks when the prune was working. The
    process's full (generation 2) garbage collections are timed too: each one stops the
    event loop, and with it every call due meanwhile. Times are kept in lists of
    floats, which add nothing for the collector to walk.
    """

    def __init__(self, store: SqlStore) -> None:
        self.engine = store.engine.sync_engine
        self.phase: str | None = None
        self.round_trips: dict[str, list[float]] = {"before": [], "during": []}
        self.collections: dict[str, list[float]] = {"before": [], "during": []}
        self.prune_starts: list[float] = []
        self.prune_ends: list[float] = []
        self._collecting = 0.0
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        gc.callbacks.append(self._collected)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)
        gc.callbacks.remove(self._collected)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_started"] = time.monotonic()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info.pop("bench_started", None)
        if self.phase is None or started is None:
            return
        ended = time.monotonic()
        if statement.startswith("INSERT INTO chat_tasks"):
            self.round_trips[self.phase].append(ended - started)
        elif self.phase == "during":
            self.prune_starts.append(started)
            self.prune_ends.append(ended)

    def _collected(self, stage: str, info: dict[str, int]) -> None:
        if info["generation"] != 2 or self.phase is None:
            return
        if stage == "start":
            self._collecting = time.monotonic()
        elif self._collecting:
            self.collections[self.phase].append(time.monotonic() - self._collecting)
            self._collecting = 0.0

    def overlapping(self, starts: Sequence[float], ends: Sequence[float]) -> list[bool]:
        """For each call: whether one of the prune's statements ran while it did."""
        found = []
        for start, end in zip(starts, ends, strict=True):
            k = bisect.bisect_right(self.prune_ends, start)  # first statement ending later
            found.append(k < len(self.prune_starts) and self.prune_starts[k] < end)
        return found

    def busy(self) -> float:
        """The share of the prune's time that its statements took."""
        if not self.prune_starts:
            return 0.0
        working = sum(e - s for s, e in zip(self.prune_starts, self.prune_ends, strict=True))
        return working / (self.prune_ends[-1] - self.prune_starts[0])


async def cpu_control(
    store: SqlStore, writers: Writers, seconds: float, pause: float, batch: float
) -> list[float]:
    """The writers' latencies beside a load that only burns database CPU, paced as a prune.

    One connection runs a statement that reads no table and writes nothing (counting a
    generated series), sized to take ``batch`` seconds (the prune's mean batch), and
    rests ``pause`` times as long after each: the prune's duty cycle, with the disk and
    the rows left out.
    """
    burn = (
        "SELECT count(*) FROM generate_series(1, {n})"
        if store.dialect == "postgresql"
        else "SELECT BENCHMARK({n}, MD5('agentsession'))"
    )
    async with store.engine.connect() as connection:
        n = 10_000
        while True:  # size the statement: ten times more until it takes a few ms
            started = time.monotonic()
            await connection.exec_driver_sql(burn.format(n=n))
            took = time.monotonic() - started
            if took > batch / 4:
                break
            n *= 10
        n = max(1, int(n * batch / took))
        done = asyncio.Event()
        load = asyncio.create_task(writers.run(done))
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.monotonic()
                await connection.exec_driver_sql(burn.format(n=n))
                await asyncio.sleep(pause * (time.monotonic() - started))
        finally:
            done.set()
            latencies = list(await load)
    return latencies


# --------------------------------------------------------------------------- one backend


@dataclass
class Result:
    backend: str
    version: str = ""
    rows: int = 0
    feedback_rows: int = 0
    load_seconds: float = 0.0
    deleted: int = 0
    prune_seconds: float = 0.0
    batches: int = 0
    longest_batch: float = 0.0
    alone: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)
    round_trips_before: list[float] = field(default_factory=list)
    round_trips_during: list[float] = field(default_factory=list)
    overlapping: list[float] = field(default_factory=list)  # latencies of calls during
    apart: list[float] = field(default_factory=list)  # the prune, split by overlap
    prune_busy: float = 0.0
    control: list[float] = field(default_factory=list)  # beside ``cpu_control``
    collections_before: list[float] = field(default_factory=list)  # full GCs' pauses
    collections_during: list[float] = field(default_factory=list)


async def run_backend(backend: str, args: Args) -> Result:
    result = Result(backend)
    print(f"{LABELS[backend]}:", file=sys.stderr)
    server = args.postgres_url if backend == "postgresql" else args.mysql_url
    name = f"agentsession_bench_retention_{secrets.token_hex(4)}"
    async with fresh_database(backend, server, name) as url:
        config = ServiceConfig(type="sql", database_url=url, pool_size=10)
        async with SessionService.from_config(config) as service:
            store = service.store
            assert isinstance(store, SqlStore)
            async with buffer_pool(store, args.mysql_buffer_pool_mb):
                return await measure_backend(service, store, args, result)
    return result


async def measure_backend(
    service: SessionService, store: SqlStore, args: Args, result: Result
) -> Result:
    """Load, run the phases and check the rows (``run_backend`` made the database)."""
    version, settings = await server_version(store), await server_settings(store)
    result.version = f"{version} ({settings})"
    now = now_ms()
    base = now - 60 * DAY
    result.load_seconds = await bulk_load(store, args.rows, base)
    result.rows = await count(store, chat_tasks)
    result.feedback_rows = await count(store, feedback)
    retention = RetentionConfig(
        task_retention_days=1,
        feedback_retention_days=1,
        session_retention_days=30,
        batch_size=args.batch_size,
    )
    cut = Cutoffs(now=now, tasks=now - DAY, feedback=now - DAY, idle=now - 30 * DAY)
    middle = base + 29 * DAY // 2
    result.plans = await plans(store, cut, args.batch_size, middle)

    writers = Writers(service, args.writers, args.rate)
    await writers.setup()
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    print("  warming up", file=sys.stderr)
    await writers.run(2.0)
    print(f"  save_task without a prune for {args.seconds:g} s", file=sys.stderr)
    probe = Probe(store)
    probe.phase = "before"
    result.alone = list(await writers.run(args.seconds))
    probe.phase = "during"
    print("  save_task during the prune", file=sys.stderr)
    done = asyncio.Event()
    load = asyncio.create_task(writers.run(done))
    try:
        report = await prune(service, retention=retention, pause=args.pause)
    finally:
        done.set()
        result.during = list(await load)
        probe.phase = None
    probe.close()
    overlaps = probe.overlapping(writers.starts, writers.ends)
    for latency, overlapped in zip(result.during, overlaps, strict=True):
        (result.overlapping if overlapped else result.apart).append(latency)
    result.round_trips_before = probe.round_trips["before"]
    result.round_trips_during = probe.round_trips["during"]
    result.prune_busy = probe.busy()
    result.collections_before = probe.collections["before"]
    result.collections_during = probe.collections["during"]
    result.deleted, result.prune_seconds = report.chat_tasks, report.duration
    result.batches, result.longest_batch = report.batches, report.longest_batch
    print(f"  save_task after the prune for {args.seconds:g} s", file=sys.stderr)
    result.after = list(await writers.run(args.seconds))
    if args.cpu_control and store.dialect != "sqlite":
        # As long as the prune ran, at its duty cycle: its mean batch, its rests.
        batch = result.prune_busy * result.prune_seconds / max(1, result.batches)
        print(
            f"  save_task beside a CPU-only load for {result.prune_seconds:.0f} s",
            file=sys.stderr,
        )
        result.control = await cpu_control(
            store, writers, result.prune_seconds, args.pause, max(batch, 0.001)
        )

    left = await count(store, chat_tasks, chat_tasks.c.id.not_like("live-%"))
    live = await count(store, chat_tasks, chat_tasks.c.id.like("live-%"))
    if left or live != writers.saved:
        raise BenchError(f"{left} old tasks left, {live}/{writers.saved} live tasks kept")
    if result.deleted != result.rows:
        raise BenchError(f"pruned {result.deleted} of {result.rows} tasks")
    if report.feedback or await count(store, feedback):
        # The tasks' batches take their feedback (all of it is on old tasks):
        # none may be left for the feedback rule, or at all.
        raise BenchError(f"{report.feedback} ratings outlived their tasks")
    return result


# --------------------------------------------------------------------------- report


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def p50_p99(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{ms(statistics.median(values))} / {ms(percentile(values, 0.99))}"


def results_table(results: Sequence[Result]) -> str:
    head = [
        "backend",
        "tasks pruned",
        "prune time",
        "rows/s",
        "batches",
        "longest batch",
        "save_task p50 / p99 before",
        "p50 / p99 during prune",
        "p50 / p99 after",
        "p99 during ÷ before",
        "p50 / p99 beside the control",
        "p99 during ÷ control",
        f"≤ {SPEED_TARGET:g} s per 1M and ≤ {TARGET:g}x control",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for result in results:
        ratio = percentile(result.during, 0.99) / percentile(result.alone, 0.99)
        per_million = result.prune_seconds * 1_000_000 / max(1, result.deleted)
        versus = (
            percentile(result.during, 0.99) / percentile(result.control, 0.99)
            if result.control
            else None
        )
        verdict = [
            "PASS" if per_million < SPEED_TARGET else f"FAIL ({per_million:.0f} s per 1M)",
            "-" if versus is None else ("PASS" if versus <= TARGET else "FAIL"),
        ]
        cells = [
            LABELS[result.backend],
            f"{result.deleted:,}",
            f"{result.prune_seconds:.1f} s",
            f"{result.deleted / result.prune_seconds:,.0f}",
            f"{result.batches:,}",
            ms(result.longest_batch),
            p50_p99(result.alone),
            p50_p99(result.during),
            p50_p99(result.after),
            f"{ratio:.2f}x",
            p50_p99(result.control),
            "-" if versus is None else f"{versus:.2f}x",
            " / ".join(verdict),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def split_table(results: Sequence[Result], seconds: float) -> str:
    """Where the tail of ``save_task`` comes from (printed, not part of ``--markdown``)."""

    def control(r: Result) -> str:
        if not r.control:
            return "-"
        p99 = percentile(r.control, 0.99)
        return f"{ms(p99)}, {p99 / percentile(r.alone, 0.99):.2f}x"

    def collections(pauses: Sequence[float], phase: float) -> str:
        longest = f", longest {ms(max(pauses))}" if pauses else ""
        return f"{len(pauses)} in {phase:.0f} s{longest}"

    head = [
        "backend",
        "prune statements' share of its time",
        "save_task round trip p50 / p99 before",
        "during prune",
        "calls during the prune overlapping a prune statement: share, p50 / p99",
        "other calls during the prune: p50 / p99",
        "full garbage collections of the benchmark process, before",
        "during prune",
        "beside a CPU-only load (the control): p99, ÷ before",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for r in results:
        share = len(r.overlapping) / max(1, len(r.during))
        cells = [
            LABELS[r.backend],
            f"{r.prune_busy:.0%}",
            p50_p99(r.round_trips_before),
            p50_p99(r.round_trips_during),
            f"{share:.0%}, {p50_p99(r.overlapping)}",
            p50_p99(r.apart),
            collections(r.collections_before, seconds),
            collections(r.collections_during, r.prune_seconds),
            control(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_section(results: Sequence[Result], args: Args) -> str:
    servers = ", ".join(result.version for result in results)
    drivers = ", ".join(
        f"{dist} {version_of(dist)}"
        for dist in ("agentsession", "SQLAlchemy", "asyncpg", "aiomysql")
    )
    loads = "; ".join(
        f"{LABELS[r.backend]} {r.rows:,} tasks + {r.feedback_rows:,} feedback in "
        f"{r.load_seconds:.0f} s"
        for r in results
    )
    body = [
        "Command:",
        "",
        "```",
        command_line(),
        "```",
        "",
        f"A fresh database per backend with {args.rows:,} chat tasks 31-60 days old (random "
        f"ids, so primary-key order is not age order) in {CONVERSATIONS:,} conversations, "
        "~550 bytes of text each, and feedback on one task in sixteen; the load is then "
        "written out (PostgreSQL `CHECKPOINT`, InnoDB's dirty pages flushed, `sync`). "
        f"`prune()` (`task_retention_days=1`, `batch_size={args.batch_size}`, "
        f"`pause={args.pause:g}`: after each batch it rests {args.pause:g} times as long as "
        "the batch took) deletes them all; each batch takes its tasks' feedback along in "
        "the same transaction (uncounted). Throughout, in the same process and event loop, "
        f"{args.writers} coroutines call `save_task` (new tasks in their own live "
        f"conversations) on a fixed schedule, {args.rate:g} calls/s in all; a call's latency "
        "runs from its scheduled time to its answer. *Before* and *after* are "
        f"{args.seconds:g} s of that load without a prune, just before and just after it "
        "(*after* shows the database catching up: writing back what the prune changed). "
        "*Longest batch* is one transaction: on PostgreSQL the tasks' DELETE and their "
        "feedback's; on MariaDB a one-row SELECT and the two DELETEs. *Beside the control* "
        "(unless `--no-cpu-control`): the same load for as long again, beside a load that "
        "only burns database CPU at the prune's duty cycle (statements as long as the "
        "prune's mean batch, with its rests), reading and writing no table. Targets (issue "
        f"17): a million tasks pruned in under {SPEED_TARGET:g} s, and save_task p99 during "
        f"the prune ≤ {TARGET:g}x its p99 beside the control.",
        "",
        results_table(results),
        "",
        f"Loaded: {loads}.",
        "",
        "### Plans",
        "",
        "Each rule's batch statement, explained on the loaded database before the prune. "
        "PostgreSQL: a batch's DELETE, `DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ... "
        "ORDER BY key LIMIT n)) AND <rule> RETURNING ...` (rows by their address: no "
        "primary-key lookup per row), with `EXPLAIN (COSTS OFF)`, and the first chat-task "
        "batch once more with `EXPLAIN ANALYZE` in a transaction rolled back; for chat "
        "tasks, then the DELETE of the feedback left without its task (`task_id = "
        "ANY(:ids) AND NOT EXISTS (task)`). MariaDB: the "
        "one-row `SELECT key ... ORDER BY key LIMIT 1 OFFSET n-1` with `ANALYZE` (`r_rows`: "
        "rows actually read; `rows` is the optimizer's estimate of the whole range), then "
        "`EXPLAIN` of the `DELETE ... WHERE key BETWEEN <previous key> AND <that key> AND "
        "<rule> LIMIT n` (for chat tasks with `RETURNING id, key`, then the feedback's "
        "DELETE). The mid-run batch starts its index range where the previous batch "
        "stopped. The rule is re-checked in each DELETE with its time column written `col + "
        "0`, so that the planner reaches the rows by the batch's ids or key range, not by a "
        "scan of every old row. Idle conversations go in two statements on every database: "
        "a window of the next n candidates by `(updated_time, id)` (an index range), then "
        "a DELETE by id of those that are idle (no recent task, found through the "
        "`session_id` index). `feedback` holds only feedback on old tasks, which the "
        "chat-task rule takes along, so by its turn that rule finds nothing; the sessions "
        "here are recent, so the session rules find nothing either (their plans are what "
        "matters).",
        "",
    ]
    for result in results:
        if result.backend == "sqlite":
            continue
        body += [f"{LABELS[result.backend]}:", ""]
        for name, plan in result.plans.items():
            body += [f"`{name}`:", "", "```", plan, "```", ""]
    body += [
        f"Environment: Python {platform.python_version()}, {drivers}; {servers}; servers on "
        f"the same machine (127.0.0.1); {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs.",
        "",
    ]
    return "\n".join([SECTION_TITLE, BEGIN_MARKER, "", *body, END_MARKER, ""])


# --------------------------------------------------------------------------- CLI


class Args(argparse.Namespace):
    backends: list[str]
    rows: int
    batch_size: int
    pause: float
    writers: int
    rate: float
    seconds: float
    postgres_url: str | None
    mysql_url: str | None
    markdown: Path | None
    gc_freeze: bool
    cpu_control: bool
    mysql_buffer_pool_mb: int | None


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends",
        type=backend_list,
        default=["postgresql", "mysql"],
        help="comma-separated, from sqlite,postgresql,mysql (default: postgresql,mysql)",
    )
    parser.add_argument(
        "--rows", type=positive_int, default=1_000_000, help="old chat tasks (default 1000000)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="default 1000")
    parser.add_argument(
        "--pause",
        type=float,
        default=BATCH_PAUSE,
        help="rest after each batch, as a multiple of the batch's duration "
        f"(default {BATCH_PAUSE:g}, the package's)",
    )
    parser.add_argument("--writers", type=positive_int, default=4, help="default 4")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="save_task calls per second (default 200)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        help="length of the phases without a prune, before and after it (default 30)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="before the phases, move every object alive into the collector's permanent "
        "generation (gc.freeze()), so that a full collection walks only newer objects",
    )
    parser.add_argument(
        "--no-cpu-control",
        dest="cpu_control",
        action="store_false",
        help="skip the control: after the prune, the writers for as long again beside a "
        "load that only burns database CPU, in statements as long as the prune's mean batch "
        "with its rests",
    )
    parser.add_argument(
        "--mysql-buffer-pool-mb",
        type=positive_int,
        default=None,
        metavar="MB",
        help="MariaDB: set innodb_buffer_pool_size to MB for the run (online, SET GLOBAL) "
        "and put the old size back after; the server's own setting otherwise",
    )
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--mysql-url", default=None)
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"also write the results as the '{SECTION_TITLE[3:]}' section of PATH",
    )
    return parser.parse_args(argv, namespace=Args())


async def run(args: Args) -> list[Result]:
    return [await run_backend(backend, args) for backend in args.backends]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = asyncio.run(run(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    section = render_section(results, args)
    publish(section, args.markdown, SECTION_TITLE)
    print(
        "\nWhere the time went (round trip: the database's answer to save_task's one "
        "statement, commit included):\n",
        file=sys.stderr,
    )
    print(split_table(results, args.seconds), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
