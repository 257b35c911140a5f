"""Real databases for the store tests: a fresh, empty database per use.

PostgreSQL and MariaDB come from AGENTSESSION_TEST_POSTGRES_URL and
AGENTSESSION_TEST_MYSQL_URL, Redis from AGENTSESSION_TEST_REDIS_URL (a fresh key
prefix per use stands for a fresh database; its keys are deleted afterwards).
Without them those cases skip locally; in CI (CI=true) a missing or unreachable
server fails the test. Each use gets its own database, created on the server and
dropped afterwards, so tests (and parallel runs) never see each other's rows and
migrations always start from nothing.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomysql
import asyncpg
import pytest
from sqlalchemy import event

from agentsession.config import ServiceConfig
from agentsession.service import SessionService
from agentsession.stores.sql import SqlStore
from tests.proxy import Proxy

#: Backends of the parametrised store fixtures, in test-id order.
SQL_BACKENDS = ("sqlite", "postgresql", "mysql")
BACKENDS = ("memory", *SQL_BACKENDS, "redis", "dynamodb")

_VARIABLES = {
    "postgresql": "AGENTSESSION_TEST_POSTGRES_URL",
    "mysql": "AGENTSESSION_TEST_MYSQL_URL",
    "redis": "AGENTSESSION_TEST_REDIS_URL",
}


def server_url(variable: str) -> str:
    """The server URL in ``variable``; skip locally, fail in CI, when it is unset."""
    url = os.environ.get(variable)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{variable} is not set; CI must test against a real server")
        pytest.skip(f"{variable} is not set")
    return url


@asynccontextmanager
async def redis_namespace() -> AsyncIterator[tuple[str, str]]:
    """``(url, key_prefix)``: a key namespace of its own on the test Redis, emptied after."""
    url = server_url(_VARIABLES["redis"])
    prefix = f"agentsession-t-{secrets.token_hex(6)}:"
    try:
        yield url, prefix
    finally:
        from redis.asyncio import Redis

        client = Redis.from_url(url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start : start + 500])
        finally:
            await client.aclose()


@asynccontextmanager
async def dynamodb_table() -> AsyncIterator[tuple[str, str]]:
    """``(endpoint, table)``: a new table on the test DynamoDB (``tests.dynamodb_local``),
    made as ``agentsession migrate`` makes it, deleted afterwards."""
    from agentsession.stores.dynamodb import DynamoDBStore
    from agentsession.stores.dynamodb.table import migrate_table
    from tests.dynamodb_local import shared_endpoint

    endpoint = shared_endpoint()
    table = f"agentsession-t-{secrets.token_hex(6)}"
    store = DynamoDBStore(table, endpoint_url=endpoint)
    try:
        await migrate_table(store.connection)
        yield endpoint, table
    finally:
        try:
            await store.connection.request("delete_table")
        finally:
            await store.close()


async def dynamodb_items(service: SessionService) -> list[dict[str, Any]]:
    """Every item of a DynamoDB service's table, in key order (tests only)."""
    from agentsession.stores.dynamodb import DynamoDBStore

    store = service.store
    assert isinstance(store, DynamoDBStore)
    items: list[dict[str, Any]] = []
    async for page in store.connection.pages("scan", ConsistentRead=True):
        items += page.get("Items", [])
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


async def dynamodb_dump(service: SessionService) -> dict[str, Any]:
    """Every row of a DynamoDB service's table, read with a ``Scan`` (tests only).

    ``sessions``: conversation id -> owner (also expired ones, and those marked
    deleted whose purge has not finished); ``chat_tasks``: ``(user, task id)`` -> its
    conversation id; ``feedback``: ``(user, feedback id)`` -> its conversation id;
    ``problems``: one line per broken link (a task or feedback without its conversation
    or task, a registry item without its conversation, or the reverse): empty when
    consistent.
    """
    items = await dynamodb_items(service)
    sessions: dict[str, str] = {}
    registry: dict[str, str] = {}
    tasks: dict[tuple[str, str], str] = {}
    feedback: dict[tuple[str, str], tuple[str, str]] = {}  # -> (conversation, task)
    for item in items:
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        if pk.startswith("I#"):
            registry[pk[2:]] = item["ow"]["S"]
        elif pk.startswith("U#") and sk.startswith("C#"):
            sessions[sk[2:]] = pk[2:]
        elif pk.startswith("U#") and sk.startswith("T#"):
            tasks[pk[2:], sk[2:]] = item["sid"]["S"]
        elif pk.startswith("U#") and sk.startswith("F#"):
            feedback[pk[2:], item["fid"]["S"]] = (item["sid"]["S"], item["tid"]["S"])
    problems = [
        f"task {task} of {user} without its conversation {sid}"
        for (user, task), sid in tasks.items()
        if sessions.get(sid) != user
    ]
    problems += [
        f"feedback {fid} of {user} without its task {tid} in {sid}"
        for (user, fid), (sid, tid) in feedback.items()
        if tasks.get((user, tid)) != sid
    ]
    problems += [
        f"registry {sid} of {user} alone"
        for sid, user in registry.items()
        if sessions.get(sid) != user
    ]
    problems += [
        f"conversation {sid} not in the registry"
        for sid, user in sessions.items()
        if registry.get(sid) != user
    ]
    return {
        "sessions": sessions,
        "chat_tasks": tasks,
        "feedback": {key: sid for key, (sid, _) in feedback.items()},
        "problems": problems,
    }


def dynamodb_service(endpoint: str, table: str, *, ttl: int | None = None) -> SessionService:
    """A (not yet started) DynamoDB-backed service on ``table``, as a user's config makes it."""
    config = ServiceConfig(type="dynamodb", table_name=table, endpoint_url=endpoint, ttl=ttl)
    return SessionService.from_config(config)


def redis_service(url: str, prefix: str, *, ttl: int | None = None) -> SessionService:
    """A (not yet started) Redis-backed service on ``url`` under the key ``prefix``."""
    from agentsession.stores.redis import RedisStore

    return SessionService(RedisStore(url, key_prefix=prefix), ttl=ttl)


def sql_service(url: str, *, ttl: int | None = None) -> SessionService:
    """A (not yet started) SQL-backed service on ``url``, as a user's config makes it."""
    return SessionService.from_config(ServiceConfig(type="sql", database_url=url, ttl=ttl))


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path="/" + name).geturl()


@asynccontextmanager
async def fresh_database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """Yield the URL of a new empty database of ``backend``; drop it afterwards.

    The URL is in the plain form a user writes (``postgresql://``, ``mysql://``,
    ``sqlite:///``).
    """
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'agentsession-{secrets.token_hex(4)}.db'}"
        return
    name = f"agentsession_t_{secrets.token_hex(6)}"
    url = server_url(_VARIABLES[backend])
    if backend == "postgresql":
        admin = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        try:
            yield _with_database(url, name)
        finally:
            admin = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
        return
    await _mysql_execute(url, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield _with_database(url, name)
    finally:
        await _mysql_execute(url, f"DROP DATABASE IF EXISTS `{name}`")


async def _mysql_execute(url: str, sql: str) -> None:
    parts = urlsplit(url)
    connection = await aiomysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        connect_timeout=10,
        autocommit=True,
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql)
    finally:
        connection.close()


@asynccontextmanager
async def behind_proxy(backend: str, tmp_path: Path) -> AsyncIterator[tuple[Proxy, SessionService]]:
    """A started service on a fresh database of ``backend``, reached through a ``Proxy``."""
    async with fresh_database(backend, tmp_path) as real_url:
        parts = urlsplit(real_url)
        proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 0)
        await proxy.start()
        proxied = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
        service = sql_service(proxied)
        try:
            await service.start()
            yield proxy, service
        finally:
            await service.close()
            await proxy.stop()


def store_of(service: SessionService) -> SqlStore:
    assert isinstance(service.store, SqlStore)
    return service.store


@contextmanager
def statements(service: SessionService) -> Iterator[list[str]]:
    """Collect the SQL of every statement the service's engine executes."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = store_of(service).engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def prune_all(store: Any, rule: str, cut: Any, batch: int) -> tuple[int, int]:
    """Run ``rule``'s batches of ``batch`` rows until the store says it is done:
    ``(rows deleted, batches)``; no batch may delete more than ``batch``."""
    deleted, batches, position = 0, 0, None
    while True:
        count, position = await store.prune_batch(rule, cut, position, batch)
        assert count <= batch
        deleted += count
        batches += 1
        if position is None:
            return deleted, batches
