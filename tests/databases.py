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
BACKENDS = ("memory", *SQL_BACKENDS, "redis")

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
