"""How the SQL store scales with table size: latency, throughput, round trips, plans.

What is measured
----------------
For each backend (SQLite in a temp file, PostgreSQL, MariaDB/MySQL) and each ``--sizes``
value the benchmark makes a brand-new database (``agentsession_bench_<random>_<size>`` on
the servers, created with asyncpg / aiomysql and dropped at the end, so nothing else on
the server is touched), enters ``SessionService.from_config(ServiceConfig(type="sql",
database_url=...))`` with ``async with`` (which runs the migrations) and bulk-loads
``chat_tasks`` with that many rows. All sizes of a backend are then measured together,
their calls interleaved, so that machine noise hits every size alike. Through the public
``SessionService`` API:

* ``list_sessions`` of the measured user: the first page (limit 20) and page 2 (via the
  cursor of page 1), latency median and p95 over ``--iterations`` calls each;
* ``list_tasks`` of the measured conversation: the first page (limit 20) and page 2;
* ``save_task`` throughput (new tasks, realistic payloads): calls one after the other,
  and from 8 concurrent coroutines (each into a conversation of a different user), in
  5 rounds of ``--saves / 5`` calls per (size, mode), alternating sizes and modes; the
  median round is reported;
* per call: the SQL statements sent (a ``before_cursor_execute`` listener on
  ``store.engine.sync_engine``), the pool pre-pings (``dialect.do_ping``), the DBAPI
  ``rollback()`` calls (``dialect.do_rollback``), and the requests actually written to
  the server socket (a counter on asyncio's socket transport ``write``: the network
  round trips; ``n/a`` for SQLite, which has no socket).

The ratio latency@largest / latency@smallest (for ``save_task``: time per save) is
reported per operation against a target of 1.5x; a miss is marked ``FAIL`` but never
changes the exit status. The plans of the four listing queries at the largest size are
taken with the exact SQL and parameters the store sent (captured by the listener):
PostgreSQL ``EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)``, MariaDB ``ANALYZE``
(EXPLAIN plus the rows actually read; plain ``EXPLAIN`` on MySQL), SQLite
``EXPLAIN QUERY PLAN``.

Data set
--------
Rows are bulk-loaded through ``store.engine`` (executemany in batches of 5,000, one
transaction per batch), not through the service. The measured user ``bench-user`` owns
the same rows at every size: 60 conversations, one of which (the measured one) holds 50
tasks and the other 59 one task each. All other rows belong to 100 background users, in
conversations of 10 tasks (so 100,000 tasks make about 10,000 conversations, ~100 per
user). Times are spread at random over the last 30 days, so the measured rows are
interleaved with everyone else's in every time index. Payloads look like real chat
turns (a 60-240 character message, 2-4 JSON bubbles of 100-400 characters, a small
metadata object). After loading, PostgreSQL gets ``VACUUM (ANALYZE)`` and MariaDB
``ANALYZE TABLE`` (what autovacuum / InnoDB's persistent statistics reach on their own
soon after such a load); SQLite gets nothing, as the package never runs ``ANALYZE``.

Timing: one process, one asyncio loop, the database servers on the same machine. A
warm-up of ``max(20, iterations // 10)`` rounds of every listing (and a few saves)
precedes the timed runs; the four listings and the sizes are interleaved call by call
(the order rotates every iteration); GC is collected before and disabled during timed
runs. The listings run before any save, on exactly the loaded rows.

Run it from the repository root::

    .venv/bin/python bench/store.py
    .venv/bin/python bench/store.py --backends sqlite --sizes 1000,10000 --iterations 100
    .venv/bin/python bench/store.py --markdown docs/benchmarks.md

``--markdown PATH`` writes (or replaces) the "## Store (bench/store.py)" section of PATH,
between its own begin/end marker comments, leaving the rest of the file alone.
Server URLs: ``--postgres-url`` / ``--mysql-url``, else ``AGENTSESSION_TEST_POSTGRES_URL``
/ ``AGENTSESSION_TEST_MYSQL_URL``, else a local server (see ``common.DEFAULT_URLS``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import platform
import random
import secrets
import statistics
import sys
import time
import uuid
from asyncio import selector_events
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agentsession.config import ServiceConfig
from agentsession.service import SessionService
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.schema import chat_tasks, sessions
from common import (
    BACKENDS,
    DEFAULT_URLS,
    LABELS,
    URL_VARIABLES,
    Unavailable,
    backend_list,
    command_line,
    fresh_database,
    positive_int,
    publish,
    server_version,
    version_of,
)

SECTION_TITLE = "## Store (bench/store.py)"
BEGIN_MARKER = "<!-- bench/store.py: begin (generated, rewritten by --markdown) -->"
END_MARKER = "<!-- bench/store.py: end -->"


MEASURED_USER = "bench-user"
OWN_SESSIONS = 60
MEASURED_TASKS = 50
BACKGROUND_USERS = 100
TASKS_PER_SESSION = 10
PAGE = 20
CONCURRENCY = 8
TARGET = 1.5
SAVE_ROUNDS = 5
BATCH = 5_000
SPAN_MS = 30 * 24 * 3600 * 1000
FIXED_TASKS = MEASURED_TASKS + (OWN_SESSIONS - 1)

LIST_OPS: tuple[str, ...] = (
    "list_sessions page 1",
    "list_sessions page 2",
    "list_tasks page 1",
    "list_tasks page 2",
)
SAVE_OPS: tuple[str, ...] = ("save_task sequential", f"save_task x{CONCURRENCY} concurrent")


class BenchError(RuntimeError):
    """An operation returned a wrong answer: the run stops, so nothing broken looks fast."""


# --------------------------------------------------------------------------- counters


class WireCounter:
    """Counts ``write`` calls on asyncio socket transports (requests sent to a server)."""

    count = 0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        transport: Any = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
        write, writelines = transport.write, transport.writelines

        def counting_write(self: Any, data: Any) -> None:
            cls.count += 1
            write(self, data)

        def counting_writelines(self: Any, lines: Any) -> None:
            cls.count += 1
            writelines(self, lines)

        transport.write = counting_write
        transport.writelines = counting_writelines
        cls._installed = True


@dataclass
class Counters:
    """Statements, pre-pings and DBAPI rollbacks of one engine; the last statement sent."""

    statements: int = 0
    pings: int = 0
    rollbacks: int = 0
    last: tuple[str, Any] | None = None

    def install(self, store: SqlStore) -> None:
        sync_engine = store.engine.sync_engine

        def before_cursor_execute(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            self.statements += 1
            self.last = (statement, parameters)

        event.listen(sync_engine, "before_cursor_execute", before_cursor_execute)
        # The pool calls dialect.do_ping (pool_pre_ping) and Connection.close() calls
        # dialect.do_rollback (even in AUTOCOMMIT); both are looked up on the instance.
        dialect = sync_engine.dialect
        do_ping, do_rollback = dialect.do_ping, dialect.do_rollback

        def counting_ping(dbapi_connection: Any) -> bool:
            self.pings += 1
            return do_ping(dbapi_connection)

        def counting_rollback(dbapi_connection: Any) -> None:
            self.rollbacks += 1
            do_rollback(dbapi_connection)

        dialect.do_ping = counting_ping  # type: ignore[method-assign]
        dialect.do_rollback = counting_rollback  # type: ignore[method-assign]

    def snapshot(self) -> tuple[int, int, int, int]:
        return (self.statements, self.pings, self.rollbacks, WireCounter.count)


@dataclass
class Trips:
    """Per-operation totals of what ``Counters`` counts."""

    calls: int = 0
    statements: int = 0
    pings: int = 0
    rollbacks: int = 0
    wire: int = 0

    def add(
        self, before: tuple[int, int, int, int], after: tuple[int, int, int, int], calls: int = 1
    ) -> None:
        self.calls += calls
        self.statements += after[0] - before[0]
        self.pings += after[1] - before[1]
        self.rollbacks += after[2] - before[2]
        self.wire += after[3] - before[3]


# --------------------------------------------------------------------------- data set


def token(rng: random.Random) -> str:
    """A conversation id as the service makes them (32 random bytes, URL-safe)."""
    return base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode("ascii")


def task_id(rng: random.Random) -> str:
    return str(uuid.UUID(bytes=rng.randbytes(16), version=4))


WORDS = tuple(
    " ".join(
        (
            "the agent should summarise this report and compare the quarterly numbers with",
            "last year please include a table of the largest changes and explain why revenue",
            "moved can you also draft an email to the team about the new deployment schedule",
        )
    ).split()
)


def sentence(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    words: list[str] = []
    while sum(len(word) + 1 for word in words) < target:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:target]


@dataclass(frozen=True)
class Payload:
    user_message: str
    bubbles: list[dict[str, Any]]
    metadata: dict[str, Any]
    bubbles_json: str
    metadata_json: str


def payloads(rng: random.Random, count: int = 32) -> list[Payload]:
    result = []
    for _ in range(count):
        bubbles = [
            {"type": rng.choice(["text", "markdown", "tool"]), "text": sentence(rng, 100, 400)}
            for _ in range(rng.randint(2, 4))
        ]
        metadata = {"model": "bench-model-1", "tokens": rng.randint(50, 4000), "latency_ms": 900}
        result.append(
            Payload(
                user_message=sentence(rng, 60, 240),
                bubbles=bubbles,
                metadata=metadata,
                bubbles_json=json.dumps(bubbles, separators=(",", ":")),
                metadata_json=json.dumps(metadata, separators=(",", ":")),
            )
        )
    return result


@dataclass
class Dataset:
    """Deterministic rows, generated in ascending chunks (``rows_until``)."""

    now: int
    rng: random.Random = field(default_factory=lambda: random.Random(20250101))
    tasks: int = 0
    conversations: int = 0
    measured_session: str = ""
    own_sessions: list[str] = field(default_factory=list)
    variants: list[Payload] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.variants = payloads(self.rng)

    def _time(self) -> int:
        return self.now - SPAN_MS + self.rng.randrange(SPAN_MS - 3_600_000)

    def _session(self, user: str, number: int, start: int, length: int) -> dict[str, Any]:
        self.conversations += 1
        updated = start + max(length - 1, 0) * 60_000 + self.rng.randrange(60_000)
        return {
            "id": token(self.rng),
            "user_id": user,
            "client_id": self.rng.choice([None, "web", "mobile"]),
            "name": f"Conversation {number}",
            "agent_id": self.rng.choice(["agent-support", "agent-research"]),
            "state": "{}",
            "version": 0,
            "created_time": start,
            "updated_time": updated,
            "last_viewed_at": None,
            "expires_at": None,
        }

    def _tasks(self, session: dict[str, Any], start: int, count: int) -> Iterator[dict[str, Any]]:
        for index in range(count):
            payload = self.rng.choice(self.variants)
            at = start + index * 60_000 + self.rng.randrange(60_000)
            self.tasks += 1
            yield {
                "id": task_id(self.rng),
                "session_id": session["id"],
                "user_id": session["user_id"],
                "user_message": payload.user_message,
                "message_bubbles": payload.bubbles_json,
                "task_metadata": payload.metadata_json,
                "created_time": at,
                "updated_time": at,
            }

    def rows_until(self, total: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Sessions and tasks that grow ``chat_tasks`` from ``self.tasks`` to ``total``."""
        new_sessions: list[dict[str, Any]] = []
        new_tasks: list[dict[str, Any]] = []
        if self.tasks == 0:
            for number in range(OWN_SESSIONS):
                length = MEASURED_TASKS if number == 0 else 1
                start = self._time()
                row = self._session(MEASURED_USER, number, start, length)
                new_sessions.append(row)
                self.own_sessions.append(row["id"])
                new_tasks.extend(self._tasks(row, start, length))
            self.measured_session = self.own_sessions[0]
        while self.tasks < total:
            length = min(TASKS_PER_SESSION, total - self.tasks)
            number = self.conversations
            user = f"user-{number % BACKGROUND_USERS:03d}"
            start = self._time()
            row = self._session(user, number, start, length)
            new_sessions.append(row)
            new_tasks.extend(self._tasks(row, start, length))
        return new_sessions, new_tasks


# --------------------------------------------------------------------------- databases


def server(backend: str, args: Args) -> str | None:
    """The server URL given on the command line for ``backend``, if any."""
    return args.postgres_url if backend == "postgresql" else args.mysql_url


async def transactional(connection: AsyncConnection, dialect: str) -> AsyncConnection:
    """The engine is AUTOCOMMIT; bulk loads want real transactions."""
    level = "SERIALIZABLE" if dialect == "sqlite" else "READ COMMITTED"
    return await connection.execution_options(isolation_level=level)


async def bulk_load(store: SqlStore, dataset: Dataset, total: int) -> float:
    """Grow ``chat_tasks`` to ``total`` rows with executemany batches; return seconds."""
    new_sessions, new_tasks = dataset.rows_until(total)
    start = time.perf_counter()
    for table, rows in ((sessions, new_sessions), (chat_tasks, new_tasks)):
        for offset in range(0, len(rows), BATCH):
            async with store.engine.connect() as raw:
                connection = await transactional(raw, store.dialect)
                async with connection.begin():
                    await connection.execute(table.insert(), rows[offset : offset + BATCH])
    await refresh_statistics(store)
    return time.perf_counter() - start


async def refresh_statistics(store: SqlStore) -> None:
    async with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            await connection.exec_driver_sql("VACUUM (ANALYZE) sessions, chat_tasks")
        elif store.dialect == "mysql":
            result = await connection.exec_driver_sql("ANALYZE TABLE sessions, chat_tasks")
            result.fetchall()


async def table_counts(store: SqlStore) -> tuple[int, int]:
    async with store.engine.connect() as connection:
        session_count = await connection.scalar(select(func.count()).select_from(sessions))
        task_count = await connection.scalar(select(func.count()).select_from(chat_tasks))
    return int(session_count or 0), int(task_count or 0)


# --------------------------------------------------------------------------- measuring

Call = Callable[[], Awaitable[Any]]


@dataclass
class SizeResult:
    size: int
    conversations: int = 0
    tasks: int = 0
    load_seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)
    trips: dict[str, Trips] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)

    def throughput(self, name: str) -> float:
        """Saves per second: the median of the rounds."""
        return statistics.median(self.rounds[name])


@dataclass
class BackendResult:
    backend: str
    version: str = ""
    sizes: list[SizeResult] = field(default_factory=list)


@dataclass
class Target:
    """One database of one size, with its started service and what was measured on it."""

    service: SessionService
    store: SqlStore
    dataset: Dataset
    counters: Counters
    result: SizeResult
    calls: dict[str, Call] = field(default_factory=dict)
    writers: list[tuple[str, str]] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)


async def open_target(
    stack: AsyncExitStack, backend: str, args: Args, run_id: str, size: int
) -> Target:
    url = await stack.enter_async_context(
        fresh_database(backend, server(backend, args), f"agentsession_bench_{run_id}_{size}")
    )
    service = SessionService.from_config(ServiceConfig(type="sql", database_url=url))
    await stack.enter_async_context(service)  # runs the migrations
    store = service.store
    if not isinstance(store, SqlStore):
        raise BenchError("from_config did not build a SqlStore")
    counters = Counters()
    counters.install(store)
    dataset = Dataset(now=time.time_ns() // 1_000_000)
    result = SizeResult(size)
    result.load_seconds = await bulk_load(store, dataset, size)
    result.conversations, result.tasks = await table_counts(store)
    print(
        f"  {size:,}: loaded {result.conversations:,} conversations and {result.tasks:,} "
        f"tasks in {result.load_seconds:.2f}s",
        file=sys.stderr,
    )
    target = Target(service, store, dataset, counters, result, rng=random.Random(size))
    target.calls = await listing_calls(service, dataset)
    return target


async def listing_calls(service: SessionService, dataset: Dataset) -> dict[str, Call]:
    """The four listing calls, after checking that each returns the right page."""
    user, conversation = MEASURED_USER, dataset.measured_session
    first = await service.list_sessions(user, limit=PAGE)
    second = await service.list_sessions(user, limit=PAGE, cursor=first.next_cursor)
    own = set(dataset.own_sessions)
    for page in (first, second):
        if len(page.items) != PAGE or page.next_cursor is None:
            raise BenchError(f"list_sessions returned {len(page.items)} items (expected {PAGE})")
        if not {item.id for item in page.items} <= own:
            raise BenchError("list_sessions returned another user's conversation")
    keys = [item.sort_key for item in first.items + second.items]
    if keys != sorted(keys, key=lambda key: (-key[0], key[1])) or len(set(keys)) != 2 * PAGE:
        raise BenchError("list_sessions pages are not in (updated_time desc, id) order")
    tasks_first = await service.list_tasks(user, conversation, limit=PAGE)
    tasks_second = await service.list_tasks(
        user, conversation, limit=PAGE, cursor=tasks_first.next_cursor
    )
    task_keys = [task.sort_key for task in tasks_first.items + tasks_second.items]
    if len(task_keys) != 2 * PAGE or task_keys != sorted(set(task_keys)):
        raise BenchError("list_tasks pages are wrong (count or order)")
    if any(task.session_id != conversation for task in tasks_first.items + tasks_second.items):
        raise BenchError("list_tasks returned a task of another conversation")
    sessions_cursor, tasks_cursor = first.next_cursor, tasks_first.next_cursor
    return {
        "list_sessions page 1": lambda: service.list_sessions(user, limit=PAGE),
        "list_sessions page 2": lambda: service.list_sessions(
            user, limit=PAGE, cursor=sessions_cursor
        ),
        "list_tasks page 1": lambda: service.list_tasks(user, conversation, limit=PAGE),
        "list_tasks page 2": lambda: service.list_tasks(
            user, conversation, limit=PAGE, cursor=tasks_cursor
        ),
    }


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


async def time_listings(targets: Sequence[Target], iterations: int) -> None:
    """Every listing on every size, interleaved call by call; latency and round trips."""
    names = list(LIST_OPS)
    for _ in range(max(20, iterations // 10)):
        for target in targets:
            for name in names:
                await target.calls[name]()
    for target in targets:
        target.result.latencies = {name: [] for name in names}
        target.result.trips.update({name: Trips() for name in names})
    gc.collect()
    gc.disable()
    try:
        for iteration in range(iterations):
            for target in rotated(targets, iteration):
                latencies, trips, counters = (
                    target.result.latencies,
                    target.result.trips,
                    target.counters,
                )
                for name in rotated(names, iteration):
                    before = counters.snapshot()
                    start = time.perf_counter()
                    await target.calls[name]()
                    elapsed = time.perf_counter() - start
                    trips[name].add(before, counters.snapshot())
                    latencies[name].append(elapsed)
    finally:
        gc.enable()


async def capture_plans(target: Target) -> None:
    """EXPLAIN each listing with the exact statement and parameters the store sent."""
    for name, call in target.calls.items():
        target.counters.last = None
        await call()
        if target.counters.last is None:
            raise BenchError(f"{name}: no statement captured")
        statement, parameters = target.counters.last
        target.result.plans[name] = await explain(target.store, statement, parameters)


async def explain(store: SqlStore, statement: str, parameters: Any) -> str:
    params = tuple(parameters) if isinstance(parameters, list | tuple) else parameters
    async with store.engine.connect() as connection:
        if store.dialect == "sqlite":
            rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
            return sqlite_tree(rows.fetchall())
        if store.dialect == "postgresql":
            prefix = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
            rows = await connection.exec_driver_sql(prefix + statement, params)
            return "\n".join(str(row[0]) for row in rows.fetchall())
        version = str(await connection.scalar(select(func.version())))
        prefix = "ANALYZE " if "mariadb" in version.lower() else "EXPLAIN "
        result = await connection.exec_driver_sql(prefix + statement, params)
        return mysql_table(list(result.keys()), result.fetchall())


def sqlite_tree(rows: Sequence[Any]) -> str:
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return "\n".join(lines)


def mysql_table(keys: list[str], rows: Sequence[Any]) -> str:
    wanted = [
        key
        for key in ("id", "select_type", "table", "type", "key", "rows", "r_rows", "Extra")
        if key in keys
    ]
    table = [wanted] + [
        ["NULL" if row[keys.index(key)] is None else str(row[keys.index(key)]) for key in wanted]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(wanted))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


async def save(target: Target, user: str, conversation: str, count: int) -> None:
    """``count`` new tasks into ``conversation``, one after the other."""
    service, rng, variants = target.service, target.rng, target.dataset.variants
    for _ in range(count):
        payload = rng.choice(variants)
        saved = await service.save_task(
            user,
            conversation,
            task_id(rng),
            user_message=payload.user_message,
            message_bubbles=payload.bubbles,
            task_metadata=payload.metadata,
        )
        if saved.session_id != conversation or saved.user_id != user:
            raise BenchError("save_task saved into the wrong conversation")


async def save_round(target: Target, name: str, count: int) -> None:
    """One timed round of ``count`` saves, sequential or from concurrent coroutines."""
    writers = target.writers
    gc.collect()
    gc.disable()
    try:
        before = target.counters.snapshot()
        start = time.perf_counter()
        if name == SAVE_OPS[0]:
            await save(target, *writers[0], count)
        else:
            per_writer = count // CONCURRENCY
            count = per_writer * CONCURRENCY
            await asyncio.gather(*(save(target, *writer, per_writer) for writer in writers[1:]))
        elapsed = time.perf_counter() - start
        after = target.counters.snapshot()
    finally:
        gc.enable()
    target.result.rounds.setdefault(name, []).append(count / elapsed)
    target.result.trips.setdefault(name, Trips()).add(before, after, count)


async def time_saves(targets: Sequence[Target], saves: int) -> None:
    """``save_task`` throughput: rounds alternate between sizes and modes."""
    for target in targets:
        own = await target.service.create_session(MEASURED_USER, name="save_task target")
        target.writers = [(MEASURED_USER, own.id)]
        for index in range(CONCURRENCY):
            user = f"user-{index:03d}"
            created = await target.service.create_session(user, name="save_task target")
            target.writers.append((user, created.id))
        await save(target, *target.writers[0], 40)
        await asyncio.gather(*(save(target, *writer, 10) for writer in target.writers[1:]))
    per_round = max(CONCURRENCY, saves // SAVE_ROUNDS)
    for round_index in range(SAVE_ROUNDS):
        for target in rotated(targets, round_index):
            for name in rotated(SAVE_OPS, round_index):
                await save_round(target, name, per_round)


async def run_backend(backend: str, args: Args) -> BackendResult:
    result = BackendResult(backend)
    print(f"{LABELS[backend]}:", file=sys.stderr)
    run_id = secrets.token_hex(4)
    async with AsyncExitStack() as stack:
        targets = [await open_target(stack, backend, args, run_id, size) for size in args.sizes]
        result.version = await server_version(targets[0].store)
        await time_listings(targets, args.iterations)
        for target in targets:
            await capture_plans(target)
        await time_saves(targets, args.saves)
        for target in targets:
            result.sizes.append(target.result)
            report_size(target.result)
    return result


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def mark(ratio: float) -> str:
    return "PASS" if ratio <= TARGET else "FAIL"


def per_call(value: int, calls: int) -> str:
    return f"{value / calls:.2f}".rstrip("0").rstrip(".") if calls else "n/a"


def report_size(sized: SizeResult) -> None:
    print(f"  {sized.size:,} tasks:", file=sys.stderr)
    for name in LIST_OPS:
        values = sized.latencies[name]
        median, slow = ms(statistics.median(values)), ms(p95(values))
        print(f"    {name:<22} median {median} ms  p95 {slow} ms", file=sys.stderr)
    for name in SAVE_OPS:
        rounds = ", ".join(f"{rate:,.0f}" for rate in sized.rounds[name])
        print(f"    {name:<22} rounds {rounds} ops/s", file=sys.stderr)


def size_label(size: int) -> str:
    if size >= 1000 and size % 1000 == 0:
        return f"{size // 1000:,}k"
    return f"{size:,}"


def latency_table(results: Sequence[BackendResult], sizes: Sequence[int]) -> str:
    small, large = sizes[0], sizes[-1]
    header = ["backend", "operation", *[f"{size_label(s)} median / p95" for s in sizes]]
    if len(sizes) > 1:
        header += [f"median {size_label(large)}/{size_label(small)}", f"≤ {TARGET}x"]
    lines = table_head(header)
    for backend in results:
        by_size = {sized.size: sized for sized in backend.sizes}
        for name in LIST_OPS:
            row = [LABELS[backend.backend], f"`{name}`"]
            for size in sizes:
                values = by_size[size].latencies[name]
                row.append(f"{ms(statistics.median(values))} / {ms(p95(values))} ms")
            if len(sizes) > 1:
                ratio = statistics.median(by_size[large].latencies[name]) / statistics.median(
                    by_size[small].latencies[name]
                )
                row += [f"{ratio:.2f}x", mark(ratio)]
            lines.append(table_row(row))
        for name in SAVE_OPS:
            row = [LABELS[backend.backend], f"`{name}`"]
            row += [f"{by_size[size].throughput(name):,.0f} ops/s" for size in sizes]
            if len(sizes) > 1:
                ratio = by_size[small].throughput(name) / by_size[large].throughput(name)
                row += [f"{ratio:.2f}x", mark(ratio)]
            lines.append(table_row(row))
    return "\n".join(lines)


def trips_table(results: Sequence[BackendResult], size: int) -> str:
    header = [
        "backend",
        "operation",
        "SQL statements",
        "pre-pings",
        "DBAPI rollback()",
        "requests on the wire",
    ]
    lines = table_head(header)
    for backend in results:
        sized = next(s for s in backend.sizes if s.size == size)
        for name in (*LIST_OPS, *SAVE_OPS):
            trips = sized.trips[name]
            wire = "n/a" if backend.backend == "sqlite" else per_call(trips.wire, trips.calls)
            lines.append(
                table_row(
                    [
                        LABELS[backend.backend],
                        f"`{name}`",
                        per_call(trips.statements, trips.calls),
                        per_call(trips.pings, trips.calls),
                        per_call(trips.rollbacks, trips.calls),
                        wire,
                    ]
                )
            )
    return "\n".join(lines)


def trips_notes(results: Sequence[BackendResult], size: int) -> list[str]:
    """One line per server backend: what its requests on the wire are made of."""
    notes = []
    for backend in results:
        if backend.backend == "sqlite":
            continue
        sized = next(s for s in backend.sizes if s.size == size)
        totals = Trips()
        for trips in sized.trips.values():
            totals.calls += trips.calls
            totals.statements += trips.statements
            totals.pings += trips.pings
            totals.wire += trips.wire
        statements = totals.statements / totals.calls
        pings = totals.pings / totals.calls
        rest = totals.wire / totals.calls - statements - pings
        notes.append(
            f"- {LABELS[backend.backend]}: {totals.wire / totals.calls:.2f} requests per call "
            f"= {statements:.2f} statement + {pings:.2f} pre-ping + {rest:.2f} other "
            "(a `ROLLBACK`, or a statement prepared on first use of a pooled connection)."
        )
    return notes


def rows_line(results: Sequence[BackendResult]) -> str:
    parts = []
    for backend in results:
        loads = ", ".join(
            f"{sized.tasks:,} tasks / {sized.conversations:,} conversations "
            f"(loaded in {sized.load_seconds:.2f}s)"
            for sized in backend.sizes
        )
        parts.append(f"{LABELS[backend.backend]}: {loads}")
    return "; ".join(parts)


def table_head(header: Sequence[str]) -> list[str]:
    return [
        table_row(header),
        "|" + "|".join(["---", "---", *["---:"] * (len(header) - 2)]) + "|",
    ]


def table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def plans_section(results: Sequence[BackendResult], size: int) -> list[str]:
    explain_kind = {
        "sqlite": "`EXPLAIN QUERY PLAN`",
        "postgresql": "`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)`",
        "mysql": "MariaDB `ANALYZE` (EXPLAIN plus `r_rows`, the rows actually read)",
    }
    lines = [
        f"### Query plans at {size:,} tasks",
        "",
        "The statements and parameters the store sent (captured by the listener), explained "
        "on the same database. `list_tasks` is one `UNION ALL` of an ownership marker row "
        "(from `sessions`) and the page of tasks.",
        "",
    ]
    for backend in results:
        sized = next(s for s in backend.sizes if s.size == size)
        lines += [f"{LABELS[backend.backend]}, {explain_kind[backend.backend]}:", ""]
        for name in LIST_OPS:
            lines += [f"`{name}`:", "", "```", sized.plans[name], "```", ""]
    return lines


def environment_line(results: Sequence[BackendResult]) -> str:
    servers = ", ".join(backend.version for backend in results if backend.version)
    drivers = ", ".join(
        f"{dist} {version_of(dist)}"
        for dist in ("agentsession", "SQLAlchemy", "aiosqlite", "asyncpg", "aiomysql")
    )
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), {drivers}; "
        f"{servers}; servers on the same machine (127.0.0.1); "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs."
    )


def render_section(results: Sequence[BackendResult], skipped: dict[str, str], args: Args) -> str:
    done = list(results)
    sizes = args.sizes
    body = [
        "Command:",
        "",
        "```",
        command_line(),
        "```",
        "",
        f"`chat_tasks` loaded with {', '.join(f'{s:,}' for s in sizes)} rows, one fresh "
        "database per backend and size, all sizes measured in the same run with their calls "
        "interleaved (100 background users with ~10-task conversations, plus the "
        f"measured user: {OWN_SESSIONS} conversations, the measured one with "
        f"{MEASURED_TASKS} tasks, the same at every size). Latency of one call through "
        f"`SessionService` (limit {PAGE}; page 2 via the cursor of page 1), median / p95 of "
        f"{args.iterations} calls; `save_task` is throughput (new tasks, the median of "
        f"{SAVE_ROUNDS} rounds of {max(CONCURRENCY, args.saves // SAVE_ROUNDS):,} saves), one "
        f"after the other and from {CONCURRENCY} concurrent coroutines. The ratio column is "
        "latency at the largest size ÷ at the smallest (for `save_task`: time "
        f"per save); the target is ≤ {TARGET}x, measured in one run.",
        "",
    ]
    if done:
        body += [latency_table(done, sizes), ""]
        body += [
            f"Per call, at {sizes[-1]:,} tasks: SQL statements (a `before_cursor_execute` "
            "listener on `store.engine.sync_engine`), pool pre-pings (`dialect.do_ping`, "
            "the engine's `pool_pre_ping`), DBAPI `rollback()` calls (SQLAlchemy makes one "
            "when a connection closes, even in AUTOCOMMIT; aiomysql sends it to the server "
            "as `ROLLBACK`, asyncpg's adapter does not when no transaction is open) and "
            "requests written to the server socket (each one a network round trip):",
            "",
            trips_table(done, sizes[-1]),
            "",
            *trips_notes(done, sizes[-1]),
            "",
            f"Rows: {rows_line(done)}.",
            "",
        ]
    body += [f"- {LABELS[name]}: skipped ({reason})" for name, reason in skipped.items()]
    if skipped:
        body.append("")
    if done:
        body += plans_section(done, sizes[-1])
    body += [f"Environment: {environment_line(done)}", ""]
    return "\n".join([SECTION_TITLE, BEGIN_MARKER, "", *body, END_MARKER, ""])


# --------------------------------------------------------------------------- CLI


class Args(argparse.Namespace):
    backends: list[str]
    sizes: list[int]
    iterations: int
    saves: int
    postgres_url: str | None
    mysql_url: str | None
    markdown: Path | None


def size_list(value: str) -> list[int]:
    sizes = sorted({positive_int(part) for part in value.split(",") if part.strip()})
    if not sizes or sizes[0] < FIXED_TASKS + 1:
        raise argparse.ArgumentTypeError(f"every size must be > {FIXED_TASKS}, got {value!r}")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(
        description="SQL store latency, throughput, round trips and plans at two table sizes."
    )
    parser.add_argument(
        "--backends",
        type=backend_list,
        default=list(BACKENDS),
        help="comma-separated, from sqlite,postgresql,mysql (default: all three)",
    )
    parser.add_argument(
        "--sizes",
        type=size_list,
        default=[1_000, 100_000],
        help="rows in chat_tasks, comma-separated, one database each (default 1000,100000)",
    )
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=300,
        help="timed calls per listing operation and size (default 300)",
    )
    parser.add_argument(
        "--saves",
        type=positive_int,
        default=1_000,
        help="save_task calls per size and mode, in 5 timed rounds (default 1000)",
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help=f"PostgreSQL server (default ${URL_VARIABLES['postgresql']}, else "
        f"{DEFAULT_URLS['postgresql']}); the run uses a new database on it",
    )
    parser.add_argument(
        "--mysql-url",
        default=None,
        help=f"MariaDB/MySQL server (default ${URL_VARIABLES['mysql']}, else "
        f"{DEFAULT_URLS['mysql']}); the run uses a new database on it",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"also write the results as the '{SECTION_TITLE[3:]}' section of PATH",
    )
    return parser.parse_args(argv, namespace=Args())


async def run(args: Args) -> tuple[list[BackendResult], dict[str, str]]:
    WireCounter.install()
    results: list[BackendResult] = []
    skipped: dict[str, str] = {}
    for backend in args.backends:
        try:
            results.append(await run_backend(backend, args))
        except Unavailable as exc:
            skipped[backend] = str(exc)
            print(f"note: skipping {backend}: {exc}", file=sys.stderr)
    return results, skipped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results, skipped = asyncio.run(run(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not results:
        print("error: no backend could be measured", file=sys.stderr)
        return 1
    section = render_section(results, skipped, args)
    publish(section, args.markdown, SECTION_TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
