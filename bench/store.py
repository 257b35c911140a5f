"""How the stores scale with table size: latency, throughput, round trips, plans.

What is measured
----------------
For each backend (SQLite in a temp file, PostgreSQL, MariaDB/MySQL; Redis and the memory
store on request, see "Redis" below) and each ``--sizes``
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
between its own begin/end marker comments, leaving the rest of the file alone; a run
that measures Redis writes the "## Redis (bench/store.py)" section instead.
Server URLs: ``--postgres-url`` / ``--mysql-url`` / ``--redis-url``, else
``AGENTSESSION_TEST_POSTGRES_URL`` / ``AGENTSESSION_TEST_MYSQL_URL`` /
``AGENTSESSION_TEST_REDIS_URL``, else a local server (see ``common.DEFAULT_URLS``).

Redis
-----
``--backends ...,redis`` adds a ``RedisStore`` on the Redis server (the same calls, the
same data set, the same interleaving). Each size lives under a key prefix of its own,
``agentsession-bench-<random>-<size>:``; its keys are deleted at the end (``SCAN MATCH``
on that prefix and ``UNLINK``); nothing else on the server is touched, and it is never
flushed. The rows are loaded through the store's own calls (``insert_session``, then
``save_task`` with the records' own times, 8 calls in flight), so what is stored is
exactly what the store writes. Round trips: the commands the store sends (a counter on
redis-py's ``pack_command``, pipelines and scripts included) and the requests written
to the socket; in place of query plans, the commands each listing sends.

Against PostgreSQL in the same run, the ratios the Redis backend is meant to reach are
printed (never asserted): ``save_task`` throughput ≥ 2x PostgreSQL's, ``list_tasks``
median ≤ PostgreSQL's, and every Redis operation flat from the smallest size to the
largest (≤ 1.2x, where the SQL backends get 1.5x). Then its memory: 1,000 conversations
with 10 tasks each (the data set's payloads) are written under a prefix of their own,
and both ``MEMORY USAGE`` (``SAMPLES 0``, summed over their keys) and the change in
``INFO memory`` ``used_memory`` are reported (the latter is the whole server's, so
other clients of a shared server add noise to it).

``--backends ...,redis-aof`` adds the same on a ``redis-server`` the run starts itself
(a spare port, a temporary directory, ``--appendonly yes --appendfsync always --save
''``; stopped and removed at the end): every write is fsynced before Redis answers, as
PostgreSQL fsyncs every commit, for a comparison at equal durability (a shared Redis
often runs without persistence).

``--backends ...,memory`` adds the in-process ``MemoryStore`` as a control: no network
and no server, the cost of the service layer and of this process alone, a ceiling that
any store's throughput measured by this one-process client stays under.
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
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from asyncio import selector_events
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agentsession.config import ServiceConfig
from agentsession.service import SessionService
from agentsession.stores.base import SessionRecord, Store, TaskRecord
from agentsession.stores.memory import MemoryStore
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.schema import chat_tasks, sessions
from common import (
    BACKENDS,
    DEFAULT_URLS,
    URL_VARIABLES,
    Unavailable,
    command_line,
    fresh_database,
    positive_int,
    publish,
    server_version,
    version_of,
)
from common import LABELS as SQL_LABELS

SECTION_TITLE = "## Store (bench/store.py)"
BEGIN_MARKER = "<!-- bench/store.py: begin (generated, rewritten by --markdown) -->"
END_MARKER = "<!-- bench/store.py: end -->"
REDIS_SECTION_TITLE = "## Redis (bench/store.py)"
REDIS_BEGIN_MARKER = "<!-- bench/store.py --backends ...,redis: begin (generated) -->"
REDIS_END_MARKER = "<!-- bench/store.py --backends ...,redis: end -->"

#: What ``--backends`` takes: the SQL backends (the default), Redis (the server at
#: ``--redis-url``, and ``redis-aof``: a redis-server of the run's own that fsyncs its
#: append-only file on every write), the memory control.
STORE_BACKENDS: tuple[str, ...] = (*BACKENDS, "redis", "redis-aof", "memory")
REDIS_BACKENDS: tuple[str, ...] = ("redis", "redis-aof")
LABELS = {
    **SQL_LABELS,
    "redis": "Redis",
    "redis-aof": "Redis, AOF fsync always",
    "memory": "memory (control)",
}
REDIS_URL_VARIABLE = "AGENTSESSION_TEST_REDIS_URL"
REDIS_DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: Calls in flight while the store's own calls load Redis (under its pool of 10).
LOAD_CONCURRENCY = 8
#: The memory measurement: this many conversations of this many tasks.
MEMORY_CONVERSATIONS = 1_000
MEMORY_TASKS = 10
#: Targets of the Redis backend, printed, never asserted.
REDIS_FLAT = 1.2
REDIS_SAVE_VS_POSTGRES = 2.0
REDIS_LIST_VS_POSTGRES = 1.0


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
    """Counts ``write`` calls on asyncio socket transports (requests sent to a server).

    A ``writelines`` (redis-py sends with it) counts once, not once more for the
    ``write`` it makes of the joined buffer where the transport has no ``writelines``
    of its own (Python < 3.12).
    """

    count = 0
    _inside_writelines = 0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        transport: Any = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
        write, writelines = transport.write, transport.writelines

        def counting_write(self: Any, data: Any) -> None:
            if not cls._inside_writelines:
                cls.count += 1
            write(self, data)

        def counting_writelines(self: Any, lines: Any) -> None:
            cls.count += 1
            cls._inside_writelines += 1
            try:
                writelines(self, lines)
            finally:
                cls._inside_writelines -= 1

        transport.write = counting_write
        transport.writelines = counting_writelines
        cls._installed = True


class RedisCommands:
    """Counts the commands redis-py packs to send (one per command, in a pipeline too),
    and records their names while ``recording`` is a list."""

    count = 0
    recording: list[str] | None = None
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        from redis.asyncio.connection import AbstractConnection

        pack = AbstractConnection.pack_command

        def counting_pack(self: Any, *args: Any) -> Any:
            cls.count += 1
            if cls.recording is not None:
                name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
                cls.recording.append(name.split()[0].upper())
            return pack(self, *args)

        AbstractConnection.pack_command = counting_pack  # type: ignore[method-assign]
        cls._installed = True


@dataclass
class Counters:
    """Statements, pre-pings and DBAPI rollbacks of one engine; the last statement sent.

    On Redis, ``statements`` is the commands sent (``RedisCommands``); on the memory
    store nothing is counted.
    """

    statements: int = 0
    pings: int = 0
    rollbacks: int = 0
    last: tuple[str, Any] | None = None
    redis: bool = False

    def install_redis(self) -> None:
        RedisCommands.install()
        self.redis = True

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
        if self.redis:
            return (RedisCommands.count, 0, 0, WireCounter.count)
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


def session_record(row: dict[str, Any]) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        user_id=row["user_id"],
        client_id=row["client_id"],
        name=row["name"],
        agent_id=row["agent_id"],
        created_time=row["created_time"],
        updated_time=row["updated_time"],
        last_viewed_at=row["last_viewed_at"],
        expires_at=row["expires_at"],
    )


def task_record(row: dict[str, Any]) -> TaskRecord:
    return TaskRecord(
        id=row["id"],
        session_id=row["session_id"],
        user_id=row["user_id"],
        user_message=row["user_message"],
        message_bubbles=json.loads(row["message_bubbles"]),
        task_metadata=json.loads(row["task_metadata"]),
        created_time=row["created_time"],
        updated_time=row["updated_time"],
    )


async def bounded(items: Sequence[Any], call: Callable[[Any], Awaitable[Any]], limit: int) -> None:
    """``call(item)`` for every item, ``limit`` calls in flight."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await call(item)

    await asyncio.gather(*(worker() for _ in range(limit)))


async def store_load(store: Store, dataset: Dataset, total: int) -> float:
    """Grow the store to ``total`` tasks through its own calls; return seconds."""
    new_sessions, new_tasks = dataset.rows_until(total)
    start = time.perf_counter()

    async def insert(row: dict[str, Any]) -> None:
        await store.insert_session(session_record(row))

    async def save_one(row: dict[str, Any]) -> None:
        if await store.save_task(task_record(row)) is None:
            raise BenchError(f"save_task found no conversation {row['session_id']!r}")

    await bounded(new_sessions, insert, LOAD_CONCURRENCY)
    await bounded(new_tasks, save_one, LOAD_CONCURRENCY)
    return time.perf_counter() - start


def redis_url(args: Args) -> str:
    return args.redis_url or os.environ.get(REDIS_URL_VARIABLE) or REDIS_DEFAULT_URL


def redis_client(url: str) -> Any:
    from redis.asyncio import Redis

    return Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)


async def delete_prefix(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN MATCH, UNLINK in batches); how many."""
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await client.unlink(*batch)
            batch = []
    if batch:
        deleted += await client.unlink(*batch)
    return deleted


@asynccontextmanager
async def redis_namespace(url: str, prefix: str) -> AsyncIterator[None]:
    """A key prefix of the run's own on the Redis server; its keys are deleted after."""
    client = redis_client(url)
    try:
        try:
            await client.ping()
        except Exception as exc:
            raise Unavailable(f"cannot reach Redis at {url}: {exc!r}") from exc
        print(f"  using key prefix {prefix}", file=sys.stderr)
        try:
            yield
        finally:
            deleted = await delete_prefix(client, prefix)
            print(f"  deleted {deleted:,} keys under {prefix}", file=sys.stderr)
    finally:
        await client.aclose()


async def redis_version(url: str, where: str) -> str:
    """``Redis 7.0.15 (the given server: AOF off)``: the version and whether writes persist."""
    client = redis_client(url)
    try:
        info = await client.info("server")
        persistence = await client.info("persistence")
        aof = "off"
        if int(persistence.get("aof_enabled", 0)):
            try:
                aof = "appendfsync " + (await client.config_get("appendfsync"))["appendfsync"]
            except Exception:  # CONFIG may be disabled on a managed server
                aof = "on"
    finally:
        await client.aclose()
    return f"Redis {info.get('redis_version', '?')} ({where}: AOF {aof})"


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
class RedisMemory:
    """What ``MEMORY_CONVERSATIONS`` conversations of ``MEMORY_TASKS`` tasks take in Redis."""

    conversations: int
    tasks: int
    keys: int
    memory_usage: int  # MEMORY USAGE ... SAMPLES 0, summed over the keys
    used_memory_delta: int  # INFO memory used_memory after - before (the whole server)
    payload: int  # bytes of ids, times, messages and JSON as the service hands them over

    def per_1000(self, value: int) -> float:
        return value * 1000 / self.conversations


@dataclass
class BackendResult:
    backend: str
    version: str = ""
    sizes: list[SizeResult] = field(default_factory=list)
    memory: RedisMemory | None = None
    #: Redis: latencies of a bare redis-py ``PING`` (the floor of one call from here).
    ping: list[float] = field(default_factory=list)


@dataclass
class Target:
    """One database of one size, with its started service and what was measured on it."""

    backend: str
    service: SessionService
    store: Any  # a SqlStore, a RedisStore or a MemoryStore
    dataset: Dataset
    counters: Counters
    result: SizeResult
    calls: dict[str, Call] = field(default_factory=dict)
    writers: list[tuple[str, str]] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)


async def open_store_target(
    stack: AsyncExitStack, backend: str, url: str, run_id: str, size: int
) -> Target:
    """A Redis (under a key prefix of its own) or memory store, loaded by its own calls."""
    counters = Counters()
    store: Store
    if backend in REDIS_BACKENDS:
        from agentsession.stores.redis import RedisStore

        prefix = f"agentsession-bench-{run_id}-{size}:"
        await stack.enter_async_context(redis_namespace(url, prefix))
        store = RedisStore(url, key_prefix=prefix)
        counters.install_redis()
    else:
        store = MemoryStore(max_sessions=size + 1_000)
    service = SessionService(store)
    await stack.enter_async_context(service)
    dataset = Dataset(now=time.time_ns() // 1_000_000)
    result = SizeResult(size)
    result.load_seconds = await store_load(store, dataset, size)
    result.conversations, result.tasks = dataset.conversations, dataset.tasks
    print(
        f"  {size:,}: loaded {result.conversations:,} conversations and {result.tasks:,} "
        f"tasks in {result.load_seconds:.2f}s (the store's own calls)",
        file=sys.stderr,
    )
    target = Target(backend, service, store, dataset, counters, result, rng=random.Random(size))
    target.calls = await listing_calls(service, dataset)
    return target


async def open_target(
    stack: AsyncExitStack, backend: str, args: Args, run_id: str, size: int, redis: str = ""
) -> Target:
    if backend in (*REDIS_BACKENDS, "memory"):
        return await open_store_target(stack, backend, redis, run_id, size)
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
    target = Target(backend, service, store, dataset, counters, result, rng=random.Random(size))
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


def command_summary(names: Sequence[str]) -> str:
    """``EVALSHA``, or ``ZRANGE, HGET x20``: runs of one command counted."""
    runs: list[list[Any]] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in runs) or "(none)"


async def capture_plans(target: Target) -> None:
    """EXPLAIN each listing with the exact statement and parameters the store sent
    (Redis: the commands it sent; the memory store: nothing to show)."""
    if target.backend == "memory":
        return
    if target.backend in REDIS_BACKENDS:
        for name, call in target.calls.items():
            RedisCommands.recording = []
            try:
                await call()
            finally:
                names, RedisCommands.recording = RedisCommands.recording, None
            target.result.plans[name] = command_summary(names)
        return
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


def memory_rows(rng: random.Random, now: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``MEMORY_CONVERSATIONS`` conversations of 100 users, ``MEMORY_TASKS`` tasks each."""
    dataset = Dataset(now=now, rng=rng)
    sessions_rows: list[dict[str, Any]] = []
    task_rows: list[dict[str, Any]] = []
    for number in range(MEMORY_CONVERSATIONS):
        start = dataset._time()
        row = dataset._session(f"memory-user-{number % 100:03d}", number, start, MEMORY_TASKS)
        sessions_rows.append(row)
        task_rows.extend(dataset._tasks(row, start, MEMORY_TASKS))
    return sessions_rows, task_rows


async def time_pings(url: str, iterations: int) -> list[float]:
    """A bare redis-py ``PING``, one after the other: what one round trip to the server
    costs this client before any store code runs (a control for the Redis timings)."""
    client = redis_client(url)
    try:
        for _ in range(max(20, iterations // 10)):
            await client.ping()
        latencies = []
        gc.collect()
        gc.disable()
        try:
            for _ in range(iterations):
                start = time.perf_counter()
                await client.ping()
                latencies.append(time.perf_counter() - start)
        finally:
            gc.enable()
    finally:
        await client.aclose()
    print(
        f"  redis-py PING: median {ms(statistics.median(latencies))} ms",
        file=sys.stderr,
    )
    return latencies


async def used_memory(client: Any) -> int:
    """``used_memory``, once the server has freed what earlier ``UNLINK``s handed its
    background thread (the run's own deleted sizes, or anyone's): else it would fall
    during the measurement."""
    deadline = time.monotonic() + 60
    while True:
        info = await client.info("memory")
        if int(info.get("lazyfree_pending_objects", 0)) == 0 or time.monotonic() > deadline:
            return int(info["used_memory"])
        await asyncio.sleep(0.1)


async def measure_redis_memory(url: str, run_id: str) -> RedisMemory:
    """Write 1,000 conversations of 10 tasks under a prefix of their own; what they take."""
    from agentsession.stores.redis import RedisStore

    prefix = f"agentsession-bench-{run_id}-memory:"
    sessions_rows, task_rows = memory_rows(random.Random(1000), time.time_ns() // 1_000_000)
    payload = sum(len(str(value)) for row in sessions_rows for value in row.values()) + sum(
        len(str(value)) for row in task_rows for value in row.values()
    )
    client = redis_client(url)
    try:
        async with redis_namespace(url, prefix):
            store = RedisStore(url, key_prefix=prefix)
            await store.start()
            try:
                # The pool and the scripts are ready before the first reading (no write).
                await store.get_session("memory-warm-up", "none", sessions_rows[0]["created_time"])
                before = await used_memory(client)

                async def insert(row: dict[str, Any]) -> None:
                    await store.insert_session(session_record(row))

                async def save_one(row: dict[str, Any]) -> None:
                    if await store.save_task(task_record(row)) is None:
                        raise BenchError("save_task found no conversation")

                await bounded(sessions_rows, insert, LOAD_CONCURRENCY)
                await bounded(task_rows, save_one, LOAD_CONCURRENCY)
                after = await used_memory(client)
            finally:
                await store.close()
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            usage = 0
            for offset in range(0, len(keys), 1000):
                async with client.pipeline(transaction=False) as pipe:
                    for key in keys[offset : offset + 1000]:
                        pipe.memory_usage(key, samples=0)
                    usage += sum(int(n or 0) for n in await pipe.execute())
    finally:
        await client.aclose()
    memory = RedisMemory(
        conversations=len(sessions_rows),
        tasks=len(task_rows),
        keys=len(keys),
        memory_usage=usage,
        used_memory_delta=after - before,
        payload=payload,
    )
    print(
        f"  memory: {memory.conversations:,} conversations, {memory.tasks:,} tasks in "
        f"{memory.keys:,} keys: MEMORY USAGE {usage / 1e6:.2f} MB, used_memory "
        f"+{memory.used_memory_delta / 1e6:.2f} MB (payload {payload / 1e6:.2f} MB)",
        file=sys.stderr,
    )
    return memory


@asynccontextmanager
async def own_redis_server() -> AsyncIterator[str]:
    """A redis-server of the run's own, AOF fsynced on every write; its URL. Stopped
    (SIGTERM, then SIGKILL) and its directory removed afterwards."""
    if shutil.which("redis-server") is None:
        raise Unavailable("redis-server is not installed")
    directory = tempfile.mkdtemp(prefix="agentsession-bench-redis-")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
    command += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    command += ["--daemonize", "no", "--logfile", str(Path(directory) / "redis.log")]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis_client(url)
        try:
            for _ in range(200):
                try:
                    if await client.ping():
                        break
                except Exception:  # not listening yet
                    await asyncio.sleep(0.05)
            else:
                raise Unavailable(f"the run's own redis-server did not answer on port {port}")
        finally:
            await client.aclose()
        print(f"  started redis-server on port {port} (appendfsync always)", file=sys.stderr)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(directory, ignore_errors=True)
        print(f"  stopped redis-server on port {port}", file=sys.stderr)


async def run_backend(backend: str, args: Args) -> BackendResult:
    result = BackendResult(backend)
    print(f"{LABELS[backend]}:", file=sys.stderr)
    run_id = secrets.token_hex(4)
    async with AsyncExitStack() as stack:
        url = redis_url(args) if backend == "redis" else ""
        if backend == "redis-aof":
            url = await stack.enter_async_context(own_redis_server())
        targets = [
            await open_target(stack, backend, args, run_id, size, url) for size in args.sizes
        ]
        if backend in REDIS_BACKENDS:
            where = "the given server" if backend == "redis" else "the run's own server"
            result.version = await redis_version(url, where)
        elif backend == "memory":
            result.version = ""
        else:
            result.version = await server_version(targets[0].store)
        await time_listings(targets, args.iterations)
        for target in targets:
            await capture_plans(target)
        await time_saves(targets, args.saves)
        for target in targets:
            result.sizes.append(target.result)
            report_size(target.result)
        if backend in REDIS_BACKENDS:
            result.ping = await time_pings(url, args.iterations)
        if backend == "redis":
            result.memory = await measure_redis_memory(url, run_id)
    return result


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def target_of(backend: str) -> float:
    """The largest/smallest ratio ``backend`` should stay under (Redis: flat)."""
    return REDIS_FLAT if backend in REDIS_BACKENDS else TARGET


def mark(ratio: float, target: float = TARGET) -> str:
    return "PASS" if ratio <= target else "FAIL"


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
    one_target = all(target_of(backend.backend) == TARGET for backend in results)
    header = ["backend", "operation", *[f"{size_label(s)} median / p95" for s in sizes]]
    if len(sizes) > 1:
        header += [
            f"median {size_label(large)}/{size_label(small)}",
            f"≤ {TARGET}x" if one_target else "target",
        ]
    lines = table_head(header)
    for backend in results:
        target = target_of(backend.backend)

        def mark_cell(ratio: float, target: float = target) -> str:
            return mark(ratio, target) if one_target else f"{mark(ratio, target)} (≤ {target}x)"

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
                row += [f"{ratio:.2f}x", mark_cell(ratio)]
            lines.append(table_row(row))
        for name in SAVE_OPS:
            row = [LABELS[backend.backend], f"`{name}`"]
            row += [f"{by_size[size].throughput(name):,.0f} ops/s" for size in sizes]
            if len(sizes) > 1:
                ratio = by_size[small].throughput(name) / by_size[large].throughput(name)
                row += [f"{ratio:.2f}x", mark_cell(ratio)]
            lines.append(table_row(row))
    return "\n".join(lines)


def trips_table(results: Sequence[BackendResult], size: int) -> str:
    redis = any(backend.backend in REDIS_BACKENDS for backend in results)
    header = [
        "backend",
        "operation",
        "SQL statements / Redis commands" if redis else "SQL statements",
        "pre-pings",
        "DBAPI rollback()",
        "requests on the wire",
    ]
    lines = table_head(header)
    for backend in results:
        if backend.backend == "memory":
            continue  # nothing to count: no statement, no socket
        sql = backend.backend not in (*REDIS_BACKENDS, "memory")
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
                        per_call(trips.pings, trips.calls) if sql else "n/a",
                        per_call(trips.rollbacks, trips.calls) if sql else "n/a",
                        wire,
                    ]
                )
            )
    return "\n".join(lines)


def trips_notes(results: Sequence[BackendResult], size: int) -> list[str]:
    """One line per server backend: what its requests on the wire are made of."""
    notes = []
    for backend in results:
        if backend.backend in ("sqlite", "memory"):
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
        if backend.backend in REDIS_BACKENDS:
            notes.append(
                f"- {LABELS[backend.backend]}: {totals.wire / totals.calls:.2f} socket writes "
                f"per call for {statements:.2f} commands (a pipeline sends several commands in "
                "one write; a script is one command)."
            )
            continue
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
        "redis": "no planner: the commands each call sent",
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
        if backend.backend == "memory":
            continue
        sized = next(s for s in backend.sizes if s.size == size)
        lines += [f"{LABELS[backend.backend]}, {explain_kind[backend.backend]}:", ""]
        for name in LIST_OPS:
            lines += [f"`{name}`:", "", "```", sized.plans[name], "```", ""]
    return lines


def environment_line(results: Sequence[BackendResult]) -> str:
    servers = ", ".join(backend.version for backend in results if backend.version)
    drivers = ", ".join(
        f"{dist} {version_of(dist)}"
        for dist in ("agentsession", "SQLAlchemy", "aiosqlite", "asyncpg", "aiomysql", "redis")
    )
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), {drivers}; "
        f"{servers}; servers on the same machine (127.0.0.1); "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs."
    )


def redis_targets(results: Sequence[BackendResult], sizes: Sequence[int]) -> list[str]:
    """The Redis backends' targets against PostgreSQL and their own flatness: ratios and
    PASS/FAIL, printed only (the exit status never depends on them); then the controls."""
    by_backend = {backend.backend: backend for backend in results}
    measured = [by_backend[name] for name in REDIS_BACKENDS if name in by_backend]
    if not measured:
        return []
    postgres = by_backend.get("postgresql")
    control = by_backend.get("memory")
    labels = " / ".join(size_label(size) for size in sizes)
    lines = [
        "### Redis targets",
        "",
        "Ratios from this run (printed, never asserted), each at "
        f"{labels} tasks; PASS when every size meets the target.",
        "",
        *table_head(["target", f"measured at {labels}", "result"]),
    ]

    def row(target: str, values: Sequence[float], verdict: str, unit: str = "x") -> None:
        lines.append(
            table_row([target, " / ".join(f"{value:.2f}{unit}" for value in values), verdict])
        )

    for redis in measured:
        label = LABELS[redis.backend]
        r_sizes = {sized.size: sized for sized in redis.sizes}
        if postgres is None:
            lines.append(table_row([f"{label} ÷ PostgreSQL", "PostgreSQL not measured", ""]))
        else:
            p_sizes = {sized.size: sized for sized in postgres.sizes}
            for name in SAVE_OPS:
                ratios = [r_sizes[s].throughput(name) / p_sizes[s].throughput(name) for s in sizes]
                row(
                    f"`{name}` ops/s, {label} ÷ PostgreSQL ≥ {REDIS_SAVE_VS_POSTGRES}x",
                    ratios,
                    "PASS" if min(ratios) >= REDIS_SAVE_VS_POSTGRES else "FAIL",
                )
            for name in LIST_OPS[2:]:
                ratios = [
                    statistics.median(r_sizes[s].latencies[name])
                    / statistics.median(p_sizes[s].latencies[name])
                    for s in sizes
                ]
                row(
                    f"`{name}` median, {label} ÷ PostgreSQL ≤ {REDIS_LIST_VS_POSTGRES}x",
                    ratios,
                    "PASS" if max(ratios) <= REDIS_LIST_VS_POSTGRES else "FAIL",
                )
        if len(sizes) > 1:
            small, large = r_sizes[sizes[0]], r_sizes[sizes[-1]]
            flat = {
                name: statistics.median(large.latencies[name])
                / statistics.median(small.latencies[name])
                for name in LIST_OPS
            }
            flat.update(
                {name: small.throughput(name) / large.throughput(name) for name in SAVE_OPS}
            )
            worst = max(flat, key=lambda name: flat[name])
            lines.append(
                table_row(
                    [
                        f"{label} flat: median {size_label(sizes[-1])} ÷ "
                        f"{size_label(sizes[0])}, every operation ≤ {REDIS_FLAT}x",
                        f"worst {flat[worst]:.2f}x (`{worst}`)",
                        "PASS" if flat[worst] <= REDIS_FLAT else "FAIL",
                    ]
                )
            )
    for redis in measured:
        if not redis.ping:
            continue
        r_sizes = {sized.size: sized for sized in redis.sizes}
        floor = statistics.median(redis.ping)
        per_save = [1 / r_sizes[s].throughput(SAVE_OPS[0]) for s in sizes]
        lines.append(
            table_row(
                [
                    f"control: one sequential `save_task` on {LABELS[redis.backend]}, and the "
                    f"share of it a bare redis-py `PING` takes (median {ms(floor)} ms)",
                    " / ".join(f"{ms(per)} ms ({floor / per:.0%})" for per in per_save),
                    "(control)",
                ]
            )
        )
    if control is not None:
        c_sizes = {sized.size: sized for sized in control.sizes}
        for redis in measured:
            r_sizes = {sized.size: sized for sized in redis.sizes}
            for name in SAVE_OPS:
                row(
                    f"control: `{name}` ops/s, {LABELS[redis.backend]} ÷ memory store (no I/O)",
                    [r_sizes[s].throughput(name) / c_sizes[s].throughput(name) for s in sizes],
                    "(control)",
                )
    lines.append("")
    return lines


def memory_lines(results: Sequence[BackendResult]) -> list[str]:
    memory = next((backend.memory for backend in results if backend.memory), None)
    if memory is None:
        return []
    per = memory.per_1000
    return [
        "### Redis memory",
        "",
        f"{memory.conversations:,} conversations with {memory.tasks // memory.conversations} "
        f"tasks each ({memory.tasks:,} tasks, the data set's payloads, 100 users), written "
        f"through the store under a prefix of their own: {memory.keys:,} keys.",
        "",
        *table_head(["measure", "per 1,000 conversations (10,000 tasks)", "per task"]),
        table_row(
            [
                "`MEMORY USAGE key SAMPLES 0`, summed over the keys",
                f"{per(memory.memory_usage) / 1e6:.2f} MB",
                f"{memory.memory_usage / memory.tasks:,.0f} B",
            ]
        ),
        table_row(
            [
                "`INFO memory` `used_memory`, after − before (the whole server)",
                f"{per(memory.used_memory_delta) / 1e6:.2f} MB",
                f"{memory.used_memory_delta / memory.tasks:,.0f} B",
            ]
        ),
        table_row(
            [
                "the same rows as text (ids, times, message, JSON)",
                f"{per(memory.payload) / 1e6:.2f} MB",
                f"{memory.payload / memory.tasks:,.0f} B",
            ]
        ),
        "",
    ]


def redis_commands_section(results: Sequence[BackendResult], size: int) -> list[str]:
    redis = next((backend for backend in results if backend.backend in REDIS_BACKENDS), None)
    if redis is None:
        return []
    sized = next(s for s in redis.sizes if s.size == size)
    lines = [
        f"### Redis commands at {size:,} tasks",
        "",
        "What each listing sent (a counter on redis-py's `pack_command`; SQL plans are in "
        "the Store section):",
        "",
        *table_head(["operation", "commands"]),
    ]
    lines += [table_row([f"`{name}`", f"`{sized.plans[name]}`"]) for name in LIST_OPS]
    return [*lines, ""]


def render_section(results: Sequence[BackendResult], skipped: dict[str, str], args: Args) -> str:
    done = list(results)
    sizes = args.sizes
    redis = any(backend in REDIS_BACKENDS for backend in args.backends)
    where = "one fresh database per backend and size"
    if redis:
        where += " (Redis: a fresh key prefix, loaded through the store's own calls)"
    target_text = f"the target is ≤ {TARGET}x"
    if any(target_of(backend) != TARGET for backend in args.backends):
        target_text = f"the target is ≤ {TARGET}x (Redis: ≤ {REDIS_FLAT}x)"
    body = [
        "Command:",
        "",
        "```",
        command_line(),
        "```",
        "",
        f"`chat_tasks` loaded with {', '.join(f'{s:,}' for s in sizes)} rows, {where}, "
        "all sizes measured in the same run with their calls "
        "interleaved (100 background users with ~10-task conversations, plus the "
        f"measured user: {OWN_SESSIONS} conversations, the measured one with "
        f"{MEASURED_TASKS} tasks, the same at every size). Latency of one call through "
        f"`SessionService` (limit {PAGE}; page 2 via the cursor of page 1), median / p95 of "
        f"{args.iterations} calls; `save_task` is throughput (new tasks, the median of "
        f"{SAVE_ROUNDS} rounds of {max(CONCURRENCY, args.saves // SAVE_ROUNDS):,} saves), one "
        f"after the other and from {CONCURRENCY} concurrent coroutines. The ratio column is "
        "latency at the largest size ÷ at the smallest (for `save_task`: time "
        f"per save); {target_text}, measured in one run.",
        "",
    ]
    if done:
        body += [latency_table(done, sizes), ""]
        body += redis_targets(done, sizes)
        body += [
            f"Per call, at {sizes[-1]:,} tasks: SQL statements (a `before_cursor_execute` "
            "listener on `store.engine.sync_engine`), pool pre-pings (`dialect.do_ping`, "
            "the engine's `pool_pre_ping`), DBAPI `rollback()` calls (SQLAlchemy makes one "
            "when a connection closes, even in AUTOCOMMIT; aiomysql sends it to the server "
            "as `ROLLBACK`, asyncpg's adapter does not when no transaction is open) and "
            "requests written to the server socket (each one a network round trip)"
            + ("; on Redis the commands the store sent:" if redis else ":"),
            "",
            trips_table(done, sizes[-1]),
            "",
            *trips_notes(done, sizes[-1]),
            "",
            f"Rows: {rows_line(done)}.",
            "",
        ]
        body += memory_lines(done)
    body += [f"- {LABELS[name]}: skipped ({reason})" for name, reason in skipped.items()]
    if skipped:
        body.append("")
    if done:
        if redis:
            body += redis_commands_section(done, sizes[-1])
        else:
            body += plans_section(done, sizes[-1])
    body += [f"Environment: {environment_line(done)}", ""]
    if redis:
        title, begin, end = REDIS_SECTION_TITLE, REDIS_BEGIN_MARKER, REDIS_END_MARKER
    else:
        title, begin, end = SECTION_TITLE, BEGIN_MARKER, END_MARKER
    return "\n".join([title, begin, "", *body, end, ""])


# --------------------------------------------------------------------------- CLI


class Args(argparse.Namespace):
    backends: list[str]
    sizes: list[int]
    iterations: int
    saves: int
    postgres_url: str | None
    mysql_url: str | None
    redis_url: str | None
    markdown: Path | None


def size_list(value: str) -> list[int]:
    sizes = sorted({positive_int(part) for part in value.split(",") if part.strip()})
    if not sizes or sizes[0] < FIXED_TASKS + 1:
        raise argparse.ArgumentTypeError(f"every size must be > {FIXED_TASKS}, got {value!r}")
    return sizes


def store_backend_list(value: str) -> list[str]:
    """An argparse type: comma-separated names from ``STORE_BACKENDS``."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in STORE_BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(STORE_BACKENDS)}, got {value!r}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(
        description="Store latency, throughput, round trips and plans at two table sizes."
    )
    parser.add_argument(
        "--backends",
        type=store_backend_list,
        default=list(BACKENDS),
        help="comma-separated, from sqlite,postgresql,mysql,redis,memory (default: the "
        "three SQL ones; memory is a control without I/O)",
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
        "--redis-url",
        default=None,
        help=f"Redis server (default ${REDIS_URL_VARIABLE}, else {REDIS_DEFAULT_URL}); the "
        "run writes under random key prefixes and deletes them at the end",
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
    redis = any(backend in REDIS_BACKENDS for backend in args.backends)
    title = REDIS_SECTION_TITLE if redis else SECTION_TITLE
    publish(section, args.markdown, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
