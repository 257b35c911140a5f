"""agentsession against the agent frameworks' own session stores and the raw driver.

What is measured
----------------
Four systems store and read the same chat turns in one process, one asyncio loop,
their calls interleaved round-robin (the order rotates every round and every read),
each in a database of its own on the same server:

* ``agentsession``: ``SessionService`` over ``SqlStore``
  (``SessionService.from_config(ServiceConfig(type="sql", database_url=...))``), one
  ``save_task`` per turn, ``list_tasks`` to read;
* ``ADK``: Google ADK's ``DatabaseSessionService(db_url)`` (its defaults, which include
  ``pool_pre_ping``), one ``append_event`` per turn (an ``Event`` built per turn, as an
  agent does), ``get_session`` to read, ``GetSessionConfig(num_recent_events=20)`` for
  the latest turns;
* ``OpenAI``: the OpenAI Agents SDK's ``SQLAlchemySession`` (one per conversation, all
  on one ``create_async_engine(url)`` with its defaults, ``create_tables=True``), one
  ``add_items([item])`` per turn, ``get_items(limit=20)`` / ``get_items()`` to read;
* ``raw``: the driver alone (asyncpg on PostgreSQL, aiomysql on MariaDB) on one
  connection (one per coroutine when 8 write at once), a prepared single-row ``INSERT``
  into a table shaped like ``chat_tasks`` (same columns, key and index, no foreign key)
  and an indexed ``SELECT ... ORDER BY created_time DESC, id DESC LIMIT 20``: what one
  round trip and the database itself cost, the physical limit.

A turn is the same text everywhere: a 60-240 character user message, 2-4 reply
bubbles of 100-400 characters and a small metadata object (the payloads of
``bench/store.py``), stored as one row per turn by every system (agentsession: a
task; ADK: an event whose parts are the message and the bubbles; OpenAI: one message
item; raw: one row with the JSON pre-serialized).

Workloads, for each backend and table size:

* ``sequential``: ``--seq-rounds`` rounds of ``--turns`` calls one after the other
  into a new conversation (5 x 200 = 1,000 turns by default); turns/s of the median
  round;
* ``8 x 200 concurrent``: ``--writers`` coroutines each writing ``--turns`` turns into a
  conversation of its own (a user of its own), ``--conc-rounds`` rounds; turns/s of the
  median round;
* ``latest 20``: the last 20 turns of a 200-turn conversation written above, oldest
  first (what an agent loads as context), ``--reads`` calls; p50 / p95 ms;
* ``full history``: all 200 turns of such a conversation; p50 / p95 ms.

agentsession's latest 20: if ``SessionService.list_tasks`` accepts ``newest_first``
(checked with ``inspect.signature``) the bench calls
``list_tasks(user, session, limit=20, newest_first=True)`` (one page, reversed to
chronological order); otherwise it does what the package can do today, reading the
whole conversation oldest first (``limit=MAX_PAGE_SIZE``, following cursors) and keeping
the last 20. The report says which.

Every answer is checked (the right turns in the right order, the right count), and a
wrong one stops the run: nothing broken can look fast.

Table size: before measuring, each system's tables are pre-filled to ``--sizes``
stored turns (default 1,000; ``--large`` adds 1,000,000), in conversations of 200
turns, each (size, system) in a fresh database; all sizes are then measured together,
their calls interleaved like the systems', so that machine noise hits every size alike
(on PostgreSQL a ``CHECKPOINT`` first, so that the WAL of the fills is not flushed
during the timed runs). The fill writes one template conversation
through the system's own API and copies its rows server-side
(``INSERT ... SELECT`` from ``generate_series`` on PostgreSQL, from the ``seq_0_to_N``
sequence tables on MariaDB) with new keys, in that system's own schema (columns read
from ``information_schema``); then ``VACUUM (ANALYZE)`` / ``ANALYZE TABLE``. The
"flat" table compares each figure at the largest size with the smallest.

Round trips per call are counted on the wire: after the timed runs, a second instance
of every system connects to the same database through a TCP proxy in this process that
counts, on each connection, every time the client starts sending after the server has
answered (a request/response turn: the network round trips, whatever the protocol
batches into them). Warmed up first (prepared statements, pooled connections), then
averaged over 10 calls of each kind. The proxy is used only for counting; the timed
runs connect to the server directly.

The peers are optional: ``pip install -e '.[peers]'`` (google-adk, openai-agents). A
system whose package is missing, or that does not run on a backend, is reported as
``n/a`` with the reason.

Databases: ``agentsession_bench_peers_<random>_<size>_<system>`` on each server,
created with asyncpg / aiomysql and dropped at the end (``common.fresh_database``);
nothing else on the server is touched. Server URLs: ``--postgres-url`` /
``--mysql-url``, else ``AGENTSESSION_TEST_POSTGRES_URL`` /
``AGENTSESSION_TEST_MYSQL_URL``, else a local server (``common.DEFAULT_URLS``).

Run it from the repository root::

    .venv/bin/python bench/peers.py
    .venv/bin/python bench/peers.py --large
    .venv/bin/python bench/peers.py --quick --backends postgresql
    .venv/bin/python bench/peers.py --large --markdown docs/benchmarks.md

``--markdown PATH`` writes (or replaces) the "## Peers (bench/peers.py)" section of
PATH. ``--profile`` adds a cProfile of agentsession's ``save_task`` and latest-20 read
(printed, not written to the markdown file).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import cProfile
import gc
import inspect
import io
import os
import platform
import pstats
import random
import secrets
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from agentsession.common import MAX_PAGE_SIZE
from agentsession.config import ServiceConfig
from agentsession.service import SessionService
from agentsession.stores.sql import SqlStore
from common import (
    LABELS,
    Unavailable,
    backend_list,
    command_line,
    fresh_database,
    positive_int,
    publish,
    server_settings,
    server_version,
    url_of,
    version_of,
)
from store import Payload, payloads, rotated

SECTION_TITLE = "## Peers (bench/peers.py)"
#: The section of a run that measures more than one table size (``--large``).
LARGE_SECTION_TITLE = "## Peers, flat with table size (bench/peers.py --large)"
SYSTEMS: tuple[str, ...] = ("agentsession", "ADK", "OpenAI", "raw")
WORKLOADS: tuple[str, ...] = ("sequential", "concurrent", "latest", "full")
LATEST = 20
LARGE = 1_000_000
#: Rows per ``INSERT ... SELECT`` of the pre-fill.
FILL_BATCH = 100_000
#: Calls of each kind counted through the proxy.
COUNTED_CALLS = 10
MARKER_LENGTH = len("turn 00000")
APP = "bench"


class BenchError(RuntimeError):
    """A system returned a wrong answer: the run stops, so nothing broken looks fast."""


def marker(index: int) -> str:
    """The text every system's turn ``index`` starts with, to check what reads return."""
    return f"turn {index:05d}"


def driver_url(url: str, backend: str) -> str:
    """``url`` with the SQLAlchemy async driver the peers need (asyncpg / aiomysql)."""
    scheme = "postgresql+asyncpg" if backend == "postgresql" else "mysql+aiomysql"
    return scheme + url[url.index(":") :]


def via(url: str, port: int) -> str:
    """``url`` pointed at 127.0.0.1:``port`` (the counting proxy), credentials kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return parts._replace(netloc=netloc).geturl()


# --------------------------------------------------------------------------- SQL helpers


class Admin:
    """One plain driver connection to a system's database, for the fill and statistics."""

    def __init__(self, backend: str, connection: Any) -> None:
        self.backend = backend
        self.connection = connection

    @classmethod
    async def connect(cls, backend: str, url: str) -> Admin:
        return cls(backend, await connect_raw(backend, url))

    def quote(self, name: str) -> str:
        return f'"{name}"' if self.backend == "postgresql" else f"`{name}`"

    async def execute(self, sql: str) -> None:
        if self.backend == "postgresql":
            await self.connection.execute(sql)
        else:
            async with self.connection.cursor() as cursor:
                await cursor.execute(sql)

    async def count(self, table: str) -> int:
        """The table's rows."""
        sql = f"SELECT count(*) FROM {self.quote(table)}"
        if self.backend == "postgresql":
            return int(await self.connection.fetchval(sql))
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql)
            return int((await cursor.fetchone())[0])

    async def columns(self, table: str) -> list[str]:
        """The table's columns in order, as the system created it."""
        if self.backend == "postgresql":
            rows = await self.connection.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " current_schema() AND table_name = $1 ORDER BY ordinal_position",
                table,
            )
            return [str(row[0]) for row in rows]
        async with self.connection.cursor() as cursor:
            await cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " DATABASE() AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            return [str(row[0]) for row in await cursor.fetchall()]

    async def close(self) -> None:
        if self.backend == "postgresql":
            await self.connection.close()
        else:
            self.connection.close()


async def connect_raw(backend: str, url: str) -> Any:
    """A plain asyncpg / aiomysql (autocommit) connection to ``url``."""
    if backend == "postgresql":
        import asyncpg  # type: ignore[import-untyped]

        return await asyncpg.connect(url, timeout=10)
    import aiomysql  # type: ignore[import-untyped]

    parts = urlsplit(url)
    return await aiomysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        db=parts.path.lstrip("/"),
        autocommit=True,
        connect_timeout=10,
    )


@dataclass(frozen=True)
class Fill:
    """How to copy a system's template rows of one table into background conversations.

    ``where`` picks the one template row (column -> value); ``keys`` names the columns
    that get new values: ``conv`` the conversation key, ``row`` a unique row key.
    ``per_turn``: one row per turn (else one per conversation). ``omit``: columns the
    database fills itself (an auto-increment id).
    """

    table: str
    where: dict[str, str]
    keys: dict[str, str]
    per_turn: bool
    omit: frozenset[str] = frozenset()


def copy_statement(
    admin: Admin, fill: Fill, columns: Sequence[str], low: int, high: int, turns: int
) -> str:
    """``INSERT ... SELECT`` of the template row once for each g in [low, high]."""
    q = admin.quote
    postgres = admin.backend == "postgresql"
    g = "s.g" if postgres else "s.seq"
    conv = f"({g} / {turns})" if postgres and fill.per_turn else g
    if not postgres and fill.per_turn:
        conv = f"({g} DIV {turns})"

    def key(prefix: str, expression: str) -> str:
        if postgres:
            return f"('{prefix}' || ({expression})::text)"
        return f"CONCAT('{prefix}', {expression})"

    names, values = [], []
    for column in columns:
        if column in fill.omit:
            continue
        kind = fill.keys.get(column)
        names.append(q(column))
        if kind == "conv":
            values.append(key("bg-", conv))
        elif kind == "row":
            values.append(key("bg-r-", g))
        else:
            values.append(f"t.{q(column)}")
    series = f"generate_series({low}, {high}) AS s(g)" if postgres else f"seq_{low}_to_{high} AS s"
    where = " AND ".join(f"t.{q(column)} = '{value}'" for column, value in fill.where.items())
    return (
        f"INSERT INTO {q(fill.table)} ({', '.join(names)}) SELECT {', '.join(values)}"
        f" FROM {q(fill.table)} AS t CROSS JOIN {series} WHERE {where}"
    )


async def prefill(admin: Admin, fills: Sequence[Fill], total: int, turns: int) -> None:
    """Grow the system's tables by ``total`` turns in conversations of ``turns``."""
    conversations = -(-total // turns)
    for fill in fills:
        columns = await admin.columns(fill.table)
        if not columns:
            raise BenchError(f"table {fill.table} not found for the fill")
        count = total if fill.per_turn else conversations
        for low in range(0, count, FILL_BATCH):
            high = min(low + FILL_BATCH, count) - 1
            await admin.execute(copy_statement(admin, fill, columns, low, high, turns))
        if fill.per_turn:
            stored = await admin.count(fill.table)
            if stored != total + 1:
                raise BenchError(
                    f"{fill.table} holds {stored} rows after the fill, not {total + 1}"
                )
    if admin.backend == "postgresql":
        await admin.execute("VACUUM (ANALYZE)")
    else:
        for fill in fills:
            await admin.execute(f"ANALYZE TABLE {admin.quote(fill.table)}")


# --------------------------------------------------------------------------- systems


class Conversation(abc.ABC):
    """One conversation of one system: append a turn, read the latest / all turns.

    Reads return each turn's marker (``marker(index)``), oldest first, for the checks.
    """

    @abc.abstractmethod
    async def save(self, index: int, payload: Payload) -> None: ...

    @abc.abstractmethod
    async def latest(self, count: int) -> list[str]: ...

    @abc.abstractmethod
    async def full(self) -> list[str]: ...


class System(abc.ABC):
    """A session store under test, started on one database."""

    name: ClassVar[str]
    #: How it is called, for the report.
    calls: ClassVar[str]

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self.stack = AsyncExitStack()

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and create the tables."""

    async def close(self) -> None:
        await self.stack.aclose()

    @abc.abstractmethod
    async def conversation(self, key: str) -> Conversation:
        """A new, empty conversation (of a user of its own) named by ``key``."""

    @abc.abstractmethod
    def fills(self) -> list[Fill]:
        """How ``prefill`` copies the template conversation ``tmpl`` (one turn)."""


# agentsession


#: ``--oldest-first``: read agentsession's latest turns the old way even if it can do better.
FORCE_OLDEST_FIRST = False


def newest_first_supported() -> bool:
    """Whether ``SessionService.list_tasks`` takes ``newest_first`` (the latest-N read),
    and ``--oldest-first`` was not given."""
    parameters = inspect.signature(SessionService.list_tasks).parameters
    return "newest_first" in parameters and not FORCE_OLDEST_FIRST


class OursConversation(Conversation):
    def __init__(self, service: SessionService, user: str, session: str) -> None:
        self.service, self.user, self.session = service, user, session
        self.newest_first = newest_first_supported()

    async def save(self, index: int, payload: Payload) -> None:
        await self.service.save_task(
            self.user,
            self.session,
            f"{self.session}-{index:05d}",
            user_message=f"{marker(index)} {payload.user_message}",
            message_bubbles=payload.bubbles,
            task_metadata=payload.metadata,
        )

    async def _all(self) -> list[str]:
        found: list[str] = []
        cursor: str | None = None
        while True:
            page = await self.service.list_tasks(
                self.user, self.session, limit=MAX_PAGE_SIZE, cursor=cursor
            )
            found.extend((task.user_message or "")[:MARKER_LENGTH] for task in page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def latest(self, count: int) -> list[str]:
        if self.newest_first:
            page = await self.service.list_tasks(
                self.user,
                self.session,
                limit=count,
                newest_first=True,  # type: ignore[call-arg]
            )
            return [(task.user_message or "")[:MARKER_LENGTH] for task in reversed(page.items)]
        return (await self._all())[-count:]

    async def full(self) -> list[str]:
        return await self._all()


class Ours(System):
    name = "agentsession"
    calls = "`SessionService` over `SqlStore`: `save_task`, `list_tasks`"

    async def start(self) -> None:
        config = ServiceConfig(type="sql", database_url=self.url)
        self.service = await self.stack.enter_async_context(SessionService.from_config(config))
        if not isinstance(self.service.store, SqlStore):
            raise BenchError("from_config did not build a SqlStore")
        self.store: SqlStore = self.service.store

    async def conversation(self, key: str) -> Conversation:
        user = f"u-{key}"
        await self.service.create_session(user, session_id=key)
        return OursConversation(self.service, user, key)

    def fills(self) -> list[Fill]:
        names = self.store.tables
        return [
            Fill(names.sessions.name, {"id": "tmpl"}, {"id": "conv"}, per_turn=False),
            Fill(
                names.chat_tasks.name,
                {"session_id": "tmpl"},
                {"id": "row", "session_id": "conv"},
                per_turn=True,
            ),
        ]


# Google ADK


class AdkConversation(Conversation):
    def __init__(self, owner: Adk, session: Any) -> None:
        self.owner, self.session = owner, session
        self.event_ids: list[str] = []

    async def save(self, index: int, payload: Payload) -> None:
        event_type, types = self.owner.event_type, self.owner.types
        parts = [types.Part(text=f"{marker(index)} {payload.user_message}")]
        parts.extend(types.Part(text=str(bubble["text"])) for bubble in payload.bubbles)
        event = event_type(
            invocation_id=f"inv-{index}",
            author="model",
            content=types.Content(role="model", parts=parts),
            custom_metadata=payload.metadata,
        )
        saved = await self.owner.service.append_event(self.session, event)
        self.event_ids.append(saved.id)

    async def _read(self, config: Any) -> list[str]:
        session = await self.owner.service.get_session(
            app_name=APP, user_id=self.session.user_id, session_id=self.session.id, config=config
        )
        if session is None:
            raise BenchError("ADK lost a session")
        return [str(event.content.parts[0].text)[:MARKER_LENGTH] for event in session.events]

    async def latest(self, count: int) -> list[str]:
        return await self._read(self.owner.config_type(num_recent_events=count))

    async def full(self) -> list[str]:
        return await self._read(None)


class Adk(System):
    name = "ADK"
    calls = (
        "`DatabaseSessionService`: `append_event`, `get_session` "
        "(`GetSessionConfig(num_recent_events=20)` for the latest 20)"
    )

    async def start(self) -> None:
        from google.adk.events import Event
        from google.adk.sessions import DatabaseSessionService
        from google.adk.sessions.base_session_service import GetSessionConfig
        from google.genai import types

        self.event_type: Any = Event
        self.config_type: Any = GetSessionConfig
        self.types: Any = types
        self.service: Any = DatabaseSessionService(db_url=driver_url(self.url, self.backend))
        self.stack.push_async_callback(self.service.close)
        self.template: AdkConversation | None = None

    async def conversation(self, key: str) -> Conversation:
        session = await self.service.create_session(
            app_name=APP, user_id=f"u-{key}", session_id=key
        )
        made = AdkConversation(self, session)
        if key == "tmpl":
            self.template = made
        return made

    def fills(self) -> list[Fill]:
        assert self.template is not None
        assert self.template.event_ids
        session = {"app_name": APP, "user_id": "u-tmpl"}
        return [
            Fill("sessions", {**session, "id": "tmpl"}, {"id": "conv"}, per_turn=False),
            Fill(
                "events",
                {**session, "session_id": "tmpl", "id": self.template.event_ids[0]},
                {"id": "row", "session_id": "conv"},
                per_turn=True,
            ),
        ]


# OpenAI Agents SDK


class OpenAIConversation(Conversation):
    def __init__(self, session: Any) -> None:
        self.session = session

    async def save(self, index: int, payload: Payload) -> None:
        texts = [f"{marker(index)} {payload.user_message}"]
        texts.extend(str(bubble["text"]) for bubble in payload.bubbles)
        item = {
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": t, "annotations": []} for t in texts],
        }
        await self.session.add_items([item])

    @staticmethod
    def _markers(items: list[Any]) -> list[str]:
        return [str(item["content"][0]["text"])[:MARKER_LENGTH] for item in items]

    async def latest(self, count: int) -> list[str]:
        return self._markers(await self.session.get_items(limit=count))

    async def full(self) -> list[str]:
        return self._markers(await self.session.get_items())


class OpenAI(System):
    name = "OpenAI"
    calls = "`SQLAlchemySession`: `add_items`, `get_items(limit=20)` / `get_items()`"

    async def start(self) -> None:
        from agents.extensions.memory import SQLAlchemySession
        from sqlalchemy.ext.asyncio import create_async_engine

        self.session_type: Any = SQLAlchemySession
        self.engine = create_async_engine(driver_url(self.url, self.backend))
        self.stack.push_async_callback(self.engine.dispose)
        # The tables are created by the first session's first call; make that now.
        first = SQLAlchemySession("tmpl", engine=self.engine, create_tables=True)
        await first.get_items(limit=1)

    async def conversation(self, key: str) -> Conversation:
        return OpenAIConversation(self.session_type(key, engine=self.engine))

    def fills(self) -> list[Fill]:
        return [
            Fill("agent_sessions", {"session_id": "tmpl"}, {"session_id": "conv"}, False),
            Fill(
                "agent_messages",
                {"session_id": "tmpl"},
                {"session_id": "conv"},
                per_turn=True,
                omit=frozenset({"id"}),
            ),
        ]


# The raw driver


RAW_TABLE = "raw_turns"
RAW_COLUMNS = (
    "id, session_id, user_id, user_message, message_bubbles, task_metadata,"
    " created_time, updated_time"
)
RAW_DDL = {
    "postgresql": (
        f"CREATE TABLE IF NOT EXISTS {RAW_TABLE} ("
        ' id varchar(255) COLLATE "C" NOT NULL, session_id varchar(255) COLLATE "C" NOT NULL,'
        ' user_id varchar(255) COLLATE "C" NOT NULL, user_message text,'
        " message_bubbles text NOT NULL, task_metadata text, created_time bigint NOT NULL,"
        " updated_time bigint NOT NULL, PRIMARY KEY (id, user_id))",
        f"CREATE INDEX IF NOT EXISTS ix_{RAW_TABLE}_session"
        f" ON {RAW_TABLE} (session_id, created_time, id)",
    ),
    "mysql": (
        f"CREATE TABLE IF NOT EXISTS {RAW_TABLE} ("
        " id varchar(255) NOT NULL, session_id varchar(255) NOT NULL,"
        " user_id varchar(255) NOT NULL, user_message longtext,"
        " message_bubbles longtext NOT NULL, task_metadata longtext,"
        " created_time bigint NOT NULL, updated_time bigint NOT NULL,"
        f" PRIMARY KEY (id, user_id), KEY ix_{RAW_TABLE}_session (session_id, created_time, id))"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    ),
}
RAW_SQL = {
    "postgresql": {
        "insert": f"INSERT INTO {RAW_TABLE} ({RAW_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        "latest": f"SELECT id, user_message, message_bubbles, task_metadata, created_time"
        f" FROM {RAW_TABLE} WHERE session_id = $1 ORDER BY created_time DESC, id DESC LIMIT $2",
        "full": f"SELECT id, user_message, message_bubbles, task_metadata, created_time"
        f" FROM {RAW_TABLE} WHERE session_id = $1 ORDER BY created_time, id",
    },
    "mysql": {
        "insert": f"INSERT INTO {RAW_TABLE} ({RAW_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
        "latest": f"SELECT id, user_message, message_bubbles, task_metadata, created_time"
        f" FROM {RAW_TABLE} WHERE session_id = %s ORDER BY created_time DESC, id DESC LIMIT %s",
        "full": f"SELECT id, user_message, message_bubbles, task_metadata, created_time"
        f" FROM {RAW_TABLE} WHERE session_id = %s ORDER BY created_time, id",
    },
}


class RawConnection:
    """One driver connection with the three statements (prepared on asyncpg)."""

    def __init__(self, backend: str, connection: Any) -> None:
        self.backend, self.connection = backend, connection
        self.sql = RAW_SQL[backend]
        self.prepared: dict[str, Any] = {}

    async def prepare(self) -> None:
        if self.backend == "postgresql":
            for name, sql in self.sql.items():
                self.prepared[name] = await self.connection.prepare(sql)

    async def run(self, name: str, *args: Any) -> list[Any]:
        if self.backend == "postgresql":
            return list(await self.prepared[name].fetch(*args))
        async with self.connection.cursor() as cursor:
            await cursor.execute(self.sql[name], args)
            return list(await cursor.fetchall())


class RawConversation(Conversation):
    def __init__(self, connection: RawConnection, key: str) -> None:
        self.connection, self.key, self.user = connection, key, f"u-{key}"

    async def save(self, index: int, payload: Payload) -> None:
        now = time.time_ns() // 1000
        await self.connection.run(
            "insert",
            f"{self.key}-{index:05d}",
            self.key,
            self.user,
            f"{marker(index)} {payload.user_message}",
            payload.bubbles_json,
            payload.metadata_json,
            now,
            now,
        )

    async def latest(self, count: int) -> list[str]:
        rows = await self.connection.run("latest", self.key, count)
        return [str(row[1])[:MARKER_LENGTH] for row in reversed(rows)]

    async def full(self) -> list[str]:
        return [str(row[1])[:MARKER_LENGTH] for row in await self.connection.run("full", self.key)]


class Raw(System):
    name = "raw"
    calls = "asyncpg / aiomysql on one connection: prepared `INSERT`, indexed `SELECT`"

    async def start(self) -> None:
        self.connections: list[RawConnection] = []
        self.main = await self._connect()
        admin = Admin(self.backend, self.main.connection)
        with warnings.catch_warnings():  # MariaDB warns when the table exists (the proxy run)
            warnings.simplefilter("ignore")
            for ddl in RAW_DDL[self.backend]:
                await admin.execute(ddl)
        await self.main.prepare()
        self.spare: list[RawConnection] = []

    async def _connect(self) -> RawConnection:
        made = RawConnection(self.backend, await connect_raw(self.backend, self.url))
        admin = Admin(self.backend, made.connection)
        self.stack.push_async_callback(admin.close)
        self.connections.append(made)
        return made

    async def conversation(self, key: str) -> Conversation:
        return RawConversation(self.main, key)

    async def writer(self, number: int) -> RawConnection:
        """Connection ``number`` for concurrent writers (0 is the main one)."""
        while len(self.spare) < number:
            made = await self._connect()
            await made.prepare()
            self.spare.append(made)
        return self.main if number == 0 else self.spare[number - 1]

    def fills(self) -> list[Fill]:
        return [
            Fill(RAW_TABLE, {"id": "tmpl-00000"}, {"id": "row", "session_id": "conv"}, True),
        ]


SYSTEM_TYPES: dict[str, type[System]] = {
    "agentsession": Ours,
    "ADK": Adk,
    "OpenAI": OpenAI,
    "raw": Raw,
}


def missing_package(name: str) -> str | None:
    """Why the system ``name`` cannot run here (its package is not installed), or None."""
    needs = {"ADK": "google.adk", "OpenAI": "agents"}.get(name)
    if needs is None:
        return None
    try:
        __import__(needs)
    except ImportError as exc:
        return f"not installed ({exc.name}): pip install -e '.[peers]'"
    return None


# --------------------------------------------------------------------------- the proxy


class CountingProxy:
    """Forwards 127.0.0.1:``port`` to a server and counts round trips.

    A round trip is counted each time a connection's client sends after the server
    has sent (or first on a new connection): requests the protocol pipelines into one
    write, or that TCP splits, count once; each wait for an answer counts once.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.round_trips = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        last = ["server"]
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                self._pipe(reader, up_writer, last, client=True),
                self._pipe(up_reader, writer, last, client=False),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            self.tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        last: list[str],
        *,
        client: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if client and last[0] == "server":
                    self.round_trips += 1
                last[0] = "client" if client else "server"
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


# --------------------------------------------------------------------------- measuring


@dataclass
class Results:
    """What one (backend, size) measured: turns/s of every round, latency of every read
    (seconds), round trips per call; ``skipped``: systems that did not run, and why."""

    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    trips: dict[tuple[str, str], float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    fill_seconds: dict[str, float] = field(default_factory=dict)

    def rate(self, system: str, workload: str) -> float | None:
        found = self.rates.get((system, workload))
        return statistics.median(found) if found else None

    def p(self, system: str, workload: str, q: int) -> float | None:
        """Percentile ``q`` (50 or 95) of a read, in ms."""
        found = self.latencies.get((system, workload))
        if not found:
            return None
        if q == 50:
            return statistics.median(found) * 1000
        return statistics.quantiles(found, n=100)[q - 1] * 1000

    def speed(self, system: str, workload: str) -> float | None:
        """Turns/s, or calls/s (1 / p50) for reads: higher is faster everywhere."""
        if workload in ("latest", "full"):
            p50 = self.p(system, workload, 50)
            return 1000 / p50 if p50 else None
        return self.rate(system, workload)


def expect(name: str, what: str, got: list[str], want: list[str]) -> None:
    if got != want:
        raise BenchError(
            f"{name} {what}: got {got[:3]}...{got[-3:]} ({len(got)}), want {len(want)}"
        )


@dataclass
class Args:
    backends: list[str]
    sizes: list[int]
    turns: int
    seq_rounds: int
    conc_rounds: int
    writers: int
    reads: int
    postgres_url: str | None
    mysql_url: str | None
    markdown: Path | None
    profile: bool


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Seconds ``call()`` took (GC collected before, off during) and its result."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = await call()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


async def write_turns(conversation: Conversation, turns: int, texts: list[Payload]) -> None:
    for index in range(turns):
        await conversation.save(index, texts[index % len(texts)])


async def measure(systems: dict[str, System], args: Args, results: Results) -> None:
    """The timed runs: sequential, concurrent, then the reads, interleaved round-robin."""
    texts = payloads(random.Random(20261201))
    names = list(systems)
    written: dict[str, list[Conversation]] = {name: [] for name in names}
    want = [marker(index) for index in range(args.turns)]
    for round_number in range(args.seq_rounds):
        for name in rotated(names, round_number):
            conversation = await systems[name].conversation(f"s{round_number}")
            seconds, _ = await timed(lambda c=conversation: write_turns(c, args.turns, texts))
            results.rates.setdefault((name, "sequential"), []).append(args.turns / seconds)
            written[name].append(conversation)
        print(f"    sequential round {round_number + 1}/{args.seq_rounds}", file=sys.stderr)
    for round_number in range(args.conc_rounds):
        for name in rotated(names, round_number):
            system = systems[name]
            workers = [
                await system.conversation(f"c{round_number}-{w}") for w in range(args.writers)
            ]
            if isinstance(system, Raw):
                for number, worker in enumerate(workers):
                    assert isinstance(worker, RawConversation)
                    worker.connection = await system.writer(number)

            async def everyone(workers: list[Conversation] = workers) -> None:
                await asyncio.gather(*(write_turns(w, args.turns, texts) for w in workers))

            seconds, _ = await timed(everyone)
            rate = args.writers * args.turns / seconds
            results.rates.setdefault((name, "concurrent"), []).append(rate)
            expect(name, "concurrent history", await workers[-1].full(), want)
        print(f"    concurrent round {round_number + 1}/{args.conc_rounds}", file=sys.stderr)
    reads: dict[str, Callable[[Conversation], Awaitable[list[str]]]] = {
        "latest": lambda c: c.latest(LATEST),
        "full": lambda c: c.full(),
    }
    for name in names:  # warm-up, and the first check of every conversation
        for conversation in written[name]:
            expect(name, "full history", await conversation.full(), want)
            expect(name, "latest 20", await conversation.latest(LATEST), want[-LATEST:])
    gc.collect()
    gc.disable()
    try:
        for iteration in range(args.reads):
            for workload, read in rotated(list(reads.items()), iteration):
                for name in rotated(names, iteration):
                    conversation = written[name][iteration % len(written[name])]
                    start = time.perf_counter()
                    got = await read(conversation)
                    seconds = time.perf_counter() - start
                    results.latencies.setdefault((name, workload), []).append(seconds)
                    if len(got) != (LATEST if workload == "latest" else args.turns):
                        raise BenchError(f"{name} {workload}: {len(got)} turns")
            if iteration % 50 == 49:
                gc.collect()
    finally:
        gc.enable()


async def count_round_trips(
    backend: str, urls: dict[str, str], names: list[str], results: Results
) -> None:
    """Round trips per call of each system, through the counting proxy."""
    parts = urlsplit(urls[names[0]])
    proxy = CountingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    texts = payloads(random.Random(7))
    try:
        for name in names:
            system = SYSTEM_TYPES[name](backend, via(urls[name], proxy.port))
            await system.start()
            try:
                conversation = await system.conversation("rt")
                for index in range(3):  # warm-up: connections, prepared statements
                    await conversation.save(index, texts[index])
                await conversation.latest(LATEST)
                await conversation.full()
                calls: dict[str, Callable[[int], Awaitable[Any]]] = {
                    "sequential": lambda i, c=conversation: c.save(i, texts[i % len(texts)]),
                    "latest": lambda i, c=conversation: c.latest(LATEST),
                    "full": lambda i, c=conversation: c.full(),
                }
                for workload, call in calls.items():
                    before = proxy.round_trips
                    for number in range(COUNTED_CALLS):
                        await call(3 + number)
                    results.trips[(name, workload)] = (proxy.round_trips - before) / COUNTED_CALLS
            finally:
                await system.close()
    finally:
        await proxy.stop()


async def profile_ours(system: Ours, turns: int) -> str:
    """cProfile of agentsession's ``save_task`` and latest-20 read: the top entries."""
    texts = payloads(random.Random(11))
    conversation = await system.conversation("profile")
    out = io.StringIO()
    calls: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = (
        ("save_task", lambda: write_turns(conversation, turns, texts)),
        ("latest 20", lambda: read_latest(conversation, turns)),
    )
    for label, call in calls:
        profiler = cProfile.Profile()
        profiler.enable()
        await call()
        profiler.disable()
        out.write(f"\n### cProfile: agentsession {label}, {turns} calls\n")
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(18)
        stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()


async def read_latest(conversation: Conversation, calls: int) -> None:
    for _ in range(calls):
        await conversation.latest(LATEST)


async def run_backend(backend: str, args: Args, runs: dict[tuple[str, int], Results]) -> str:
    """Fresh databases for every (size, system), the fills, then the timed runs of all of
    them interleaved (sizes too, so that machine noise hits every size alike), round trips
    at the first size; the server's description for the report."""
    everything = Results()  # keyed by "<system>@<size>", split by size at the end
    names = []
    for name in SYSTEMS:
        reason = missing_package(name)
        if reason:
            everything.skipped[name] = reason
        else:
            names.append(name)
    tag = secrets.token_hex(3)
    server = args.postgres_url if backend == "postgresql" else args.mysql_url
    environment = ""
    async with AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        systems: dict[str, System] = {}
        for size in args.sizes:
            for name in names:
                database = f"agentsession_bench_peers_{tag}_{size}_{name.lower()}"
                url = await stack.enter_async_context(fresh_database(backend, server, database))
                system = SYSTEM_TYPES[name](backend, url)
                try:
                    await system.start()
                except Exception as exc:
                    await system.close()
                    reason = f"does not start on {LABELS[backend]}: {exc!r:.200}"
                    everything.skipped[name] = reason
                    continue
                stack.push_async_callback(system.close)
                key = f"{name}@{size}"
                urls[key], systems[key] = url, system
                await fill(system, url, size, args.turns, everything, key)
        if backend == "postgresql":
            # The fills wrote gigabytes of WAL: checkpoint now, not during the timed runs.
            admin = await Admin.connect(backend, url_of(backend, server))
            try:
                await admin.execute("CHECKPOINT")
            except Exception as exc:  # not a superuser (nor pg_checkpoint): measure anyway
                print(f"  CHECKPOINT failed: {exc!r}", file=sys.stderr)
            finally:
                await admin.close()
        await measure(systems, args, everything)
        first = args.sizes[0]
        firsts = {
            key.partition("@")[0]: url for key, url in urls.items() if key.endswith(f"@{first}")
        }
        await count_round_trips(backend, firsts, list(firsts), everything)
        ours = systems.get(f"agentsession@{first}")
        if isinstance(ours, Ours):
            version = await server_version(ours.store)
            settings = await server_settings(ours.store)
            environment = f"{LABELS[backend]}: {version} ({settings})"
            if args.profile:
                print(await profile_ours(ours, 500))
    for size in args.sizes:
        runs[(backend, size)] = split(everything, size)
    return environment


async def fill(system: System, url: str, size: int, turns: int, results: Results, key: str) -> None:
    """Write the template conversation and copy it until ``size`` turns are stored."""
    template = await system.conversation("tmpl")
    await template.save(0, payloads(random.Random(3))[0])
    admin = await Admin.connect(system.backend, url)
    try:
        start = time.perf_counter()
        await prefill(admin, system.fills(), size - 1, turns)
        results.fill_seconds[key] = time.perf_counter() - start
    finally:
        await admin.close()
    print(f"  {key}: {size:,} turns stored ({results.fill_seconds[key]:.1f}s)", file=sys.stderr)


def split(everything: Results, size: int) -> Results:
    """The results of one size, keyed by system name."""
    suffix = f"@{size}"

    def mine(found: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
        return {
            (key.removesuffix(suffix), workload): value
            for (key, workload), value in found.items()
            if key.endswith(suffix) or "@" not in key
        }

    return Results(
        rates=mine(everything.rates),
        latencies=mine(everything.latencies),
        trips=mine(everything.trips),
        skipped=dict(everything.skipped),
        fill_seconds={
            key.removesuffix(suffix): value
            for key, value in everything.fill_seconds.items()
            if key.endswith(suffix)
        },
    )


# --------------------------------------------------------------------------- report


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ms(p50: float | None, p95: float | None) -> str:
    return "n/a" if p50 is None or p95 is None else f"{p50:.2f} / {p95:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def ratio(results: Results, workload: str, other: str) -> float | None:
    ours, theirs = results.speed("agentsession", workload), results.speed(other, workload)
    return None if ours is None or theirs is None else ours / theirs


WORKLOAD_LABELS = {
    "sequential": "{total:,} sequential turns (one call each), turns/s",
    "concurrent": "{writers} coroutines x {turns} turns, turns/s",
    "latest": "latest 20 turns of a {turns}-turn conversation, p50 / p95 ms",
    "full": "full {turns}-turn history, p50 / p95 ms",
}


def main_table(results: Results, args: Args) -> list[str]:
    lines = [
        "| workload | " + " | ".join(SYSTEMS) + " | ours/raw | ours/ADK | ours/OpenAI |",
        "|---|" + "---:|" * (len(SYSTEMS) + 3),
    ]
    for workload in WORKLOADS:
        label = WORKLOAD_LABELS[workload].format(
            writers=args.writers, turns=args.turns, total=args.seq_rounds * args.turns
        )
        cells = []
        for system in SYSTEMS:
            if workload in ("sequential", "concurrent"):
                cells.append(fmt_rate(results.rate(system, workload)))
            else:
                cells.append(
                    fmt_ms(results.p(system, workload, 50), results.p(system, workload, 95))
                )
        ratios = [fmt_ratio(ratio(results, workload, other)) for other in ("raw", "ADK", "OpenAI")]
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    return lines


def targets(results: Results, large: Results | None) -> list[str]:
    """The issue's targets, measured value and PASS / FAIL (never changes the exit code)."""
    rows: list[tuple[str, float | None, str, bool | None]] = []

    def add(label: str, value: float | None, limit: str, ok: bool | None) -> None:
        rows.append((label, value, limit, ok))

    seq = ratio(results, "sequential", "raw")
    add("sequential turns/s, ours ÷ raw", seq, "≥ 0.5x", None if seq is None else seq >= 0.5)
    conc = ratio(results, "concurrent", "raw")
    add("concurrent turns/s, ours ÷ raw", conc, "≥ 0.3x", None if conc is None else conc >= 0.3)
    ours = results.p("agentsession", "latest", 50)
    for other, limit in (("OpenAI", 1.0), ("raw", 1.5)):
        theirs = results.p(other, "latest", 50)
        value = None if ours is None or theirs is None else ours / theirs
        add(
            f"latest-20 p50, ours ÷ {other}",
            value,
            f"≤ {limit}x",
            None if value is None else value <= limit,
        )
    adk = [ratio(results, workload, "ADK") for workload in WORKLOADS]
    worst = None if None in adk else min(a for a in adk if a is not None)
    add(
        "slowest workload, ours ÷ ADK (speed)", worst, "≥ 5x", None if worst is None else worst >= 5
    )
    if large is not None:
        flat = [flatness(results, large, "agentsession", workload) for workload in WORKLOADS]
        most = None if None in flat else max(f for f in flat if f is not None)
        add(
            "ours, largest size ÷ smallest (time per call, worst workload)",
            most,
            "≤ 1.2x",
            None if most is None else most <= 1.2,
        )
    lines = ["| target | measured | limit | |", "|---|---:|---:|---|"]
    for label, value, limit, ok in rows:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"| {label} | {fmt_ratio(value)} | {limit} | {verdict} |")
    return lines


def flatness(small: Results, large: Results, system: str, workload: str) -> float | None:
    """Time per call at the large size ÷ at the small size."""
    a, b = small.speed(system, workload), large.speed(system, workload)
    return None if a is None or b is None else a / b


def flat_table(small: Results, large: Results, sizes: tuple[int, int]) -> list[str]:
    lines = [
        f"| workload | {' | '.join(SYSTEMS)} |",
        "|---|" + "---:|" * len(SYSTEMS),
    ]
    for workload in WORKLOADS:
        cells = [fmt_ratio(flatness(small, large, system, workload)) for system in SYSTEMS]
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return lines


def trips_table(runs: dict[tuple[str, int], Results], args: Args) -> list[str]:
    lines = [
        "| backend | system | `save` (one turn) | latest 20 | full history |",
        "|---|---|---:|---:|---:|",
    ]
    for backend in args.backends:
        results = runs.get((backend, args.sizes[0]))
        if results is None:
            continue
        for system in SYSTEMS:
            cells = []
            for workload in ("sequential", "latest", "full"):
                found = results.trips.get((system, workload))
                cells.append("n/a" if found is None else f"{found:g}")
            lines.append(f"| {LABELS[backend]} | {system} | " + " | ".join(cells) + " |")
    return lines


def git_state() -> str:
    """The commit measured and whether the working tree had changes."""
    root = Path(__file__).resolve().parents[1]

    def git(*arguments: str) -> str:
        done = subprocess.run(
            ["git", *arguments], cwd=root, capture_output=True, text=True, check=True
        )
        return done.stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return head + (f" plus uncommitted changes to {len(dirty)} files" if dirty else "")


def report(
    runs: dict[tuple[str, int], Results],
    environments: list[str],
    args: Args,
    measured_at: str,
    source: str,
    load: str,
) -> str:
    latest_call = (
        "`list_tasks(user, session, limit=20, newest_first=True)` (one page, newest first)"
        if newest_first_supported()
        else "`list_tasks` oldest first, whole conversation (`limit=MAX_PAGE_SIZE`), last 20 "
        "kept: the package had no newest-first read"
    )
    sizes = ", ".join(f"{size:,}" for size in args.sizes)
    out = [
        SECTION_TITLE,
        "",
        "Command:",
        "",
        "```",
        command_line(),
        "```",
        "",
        f"Measured on {measured_at}, agentsession at {source}. The four systems in one "
        "process, their calls interleaved round-robin, each in a database of its own on the "
        f"same server; tables pre-filled to {sizes} stored turns (conversations of "
        f"{args.turns} turns). Writes: turns/s of the median round ({args.seq_rounds} x "
        f"{args.turns} turns one after the other; {args.conc_rounds} x {args.writers} "
        f"coroutines writing {args.turns} turns each, each into its own conversation); reads: "
        f"{args.reads} calls each, spread over the sequential rounds' conversations. "
        "`ours/X` is agentsession's speed ÷ X's (turns/s, or 1 / p50 for reads): above 1x "
        "agentsession is faster.",
        "",
        "Systems: agentsession: " + Ours.calls + "; ADK: " + Adk.calls + "; OpenAI: "
        f"{OpenAI.calls}; raw: {Raw.calls}. agentsession's latest 20: {latest_call}.",
        "",
    ]
    for backend in args.backends:
        for size in args.sizes:
            results = runs.get((backend, size))
            if results is None:
                continue
            out += [f"### {LABELS[backend]}, {size:,} stored turns", ""]
            out += main_table(results, args)
            if results.skipped:
                out.append("")
                out += [f"- {name}: {why}" for name, why in results.skipped.items()]
            out.append("")
        first = runs.get((backend, args.sizes[0]))
        large = runs.get((backend, args.sizes[-1])) if len(args.sizes) > 1 else None
        if first is not None:
            out += [f"Targets of issue 17 on {LABELS[backend]} (at {args.sizes[0]:,} turns):", ""]
            out += targets(first, large)
            out.append("")
        if first is not None and large is not None:
            out += [
                f"Flat with table size on {LABELS[backend]}: time per call at "
                f"{args.sizes[-1]:,} ÷ at {args.sizes[0]:,} stored turns (target ≤ 1.2x):",
                "",
            ]
            out += flat_table(first, large, (args.sizes[0], args.sizes[-1]))
            out.append("")
    out += [
        "Round trips per call, counted on the wire (a TCP proxy in the process counts each "
        "time a connection's client sends after the server answered; warmed up, the mean of "
        f"{COUNTED_CALLS} calls):",
        "",
    ]
    out += trips_table(runs, args)
    out.append("")
    fills = []
    for (backend, size), results in runs.items():
        if results.fill_seconds:
            each = ", ".join(f"{n} {s:.1f}s" for n, s in results.fill_seconds.items())
            fills.append(f"{LABELS[backend]} {size:,}: {each}")
    out += [f"Pre-fill times: {'; '.join(fills)}.", ""]
    versions = ", ".join(
        f"{dist} {version_of(dist)}"
        for dist in ("google-adk", "openai-agents", "SQLAlchemy", "asyncpg", "aiomysql")
    )
    out += [
        f"Load average (1 min) at the start and the end of the run: {load}. "
        f"Environment: Python {platform.python_version()} ({platform.python_implementation()}),"
        f" {versions}; {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        + "; ".join(environments)
        + ".",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None) -> Args:
    parser = argparse.ArgumentParser(
        description="agentsession vs Google ADK, the OpenAI Agents SDK and the raw driver."
    )
    parser.add_argument(
        "--backends",
        type=backend_list,
        default=["postgresql", "mysql"],
        help="postgresql and/or mysql (MariaDB), comma-separated (default both)",
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: [positive_int(part) for part in text.split(",")],
        default=None,
        help="stored turns before measuring, comma-separated (default 1000)",
    )
    parser.add_argument("--large", action="store_true", help=f"also measure at {LARGE:,} turns")
    parser.add_argument("--turns", type=positive_int, default=200, help="turns per conversation")
    parser.add_argument("--seq-rounds", type=positive_int, help="default 5 (--quick: 2)")
    parser.add_argument("--conc-rounds", type=positive_int, help="default 3 (--quick: 1)")
    parser.add_argument("--writers", type=positive_int, default=8)
    parser.add_argument(
        "--reads", type=positive_int, help="calls per read kind, default 200 (--quick: 50)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and reads")
    parser.add_argument("--postgres-url")
    parser.add_argument("--mysql-url")
    parser.add_argument("--markdown", type=Path, help="write the section into this file")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of ours")
    parser.add_argument(
        "--oldest-first",
        action="store_true",
        help="read agentsession's latest 20 from the whole history even if newest_first exists",
    )
    ns = parser.parse_args(argv)
    if "sqlite" in ns.backends:
        parser.error("the peers are measured on postgresql and mysql only")
    sizes = ns.sizes or [1_000]
    if ns.large and LARGE not in sizes:
        sizes.append(LARGE)
    global FORCE_OLDEST_FIRST
    FORCE_OLDEST_FIRST = ns.oldest_first
    quick = {"seq_rounds": 2, "conc_rounds": 1, "reads": 50}
    normal = {"seq_rounds": 5, "conc_rounds": 3, "reads": 200}
    for name, value in (quick if ns.quick else normal).items():
        if getattr(ns, name) is None:
            setattr(ns, name, value)
    return Args(
        backends=ns.backends,
        sizes=sorted(sizes),
        turns=ns.turns,
        seq_rounds=ns.seq_rounds,
        conc_rounds=ns.conc_rounds,
        writers=ns.writers,
        reads=ns.reads,
        postgres_url=url_of("postgresql", ns.postgres_url),
        mysql_url=url_of("mysql", ns.mysql_url),
        markdown=ns.markdown,
        profile=ns.profile,
    )


async def run(args: Args, measured_at: str, source: str) -> str:
    start_load = os.getloadavg()[0]
    runs: dict[tuple[str, int], Results] = {}
    environments: list[str] = []
    for backend in args.backends:
        print(f"{LABELS[backend]}", file=sys.stderr)
        try:
            environment = await run_backend(backend, args, runs)
        except Unavailable as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
            continue
        if environment:
            environments.append(environment)
    load = f"{start_load:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    return report(runs, environments, args, measured_at, source, load)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    measured_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = asyncio.run(run(args, measured_at, git_state()))
    title = LARGE_SECTION_TITLE if len(args.sizes) > 1 else SECTION_TITLE
    publish(title + section[len(SECTION_TITLE) :], args.markdown, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
