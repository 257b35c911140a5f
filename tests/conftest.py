"""Shared fixtures: a clean environment for every test, and services on every backend.

Service fixtures (used by the service, HTTP API and retention tests):

* ``backend``: parametrises a test over ``BACKENDS`` (test ids ``memory``, ``sqlite``,
  ``postgresql``, ``mysql``, ``redis``, ``dynamodb``). DynamoDB is a DynamoDB Local the
  tests start (``tests/dynamodb_local.py``; ``AGENTSESSION_TEST_DYNAMODB_URL`` names
  another), with a new table per test, shared by the services the test makes.
  PostgreSQL, MariaDB and Redis come from
  ``AGENTSESSION_TEST_POSTGRES_URL`` / ``AGENTSESSION_TEST_MYSQL_URL`` /
  ``AGENTSESSION_TEST_REDIS_URL``; without them those cases skip locally and fail in
  CI (see ``tests/databases.py``). Redis gets one key prefix for the whole session.
* ``make_service``: an async factory, ``await make_service(ttl=None)``, returning a
  started ``SessionService`` on ``backend``. Every service it made is closed when the
  test ends. On SQL backends all services of the whole test session share ONE
  database per backend (created on first use, dropped at the end), so tests must
  isolate themselves with fresh random user ids (``user`` / ``new_user()``) instead of
  expecting empty tables. On ``memory`` each call makes a new, empty ``MemoryStore``:
  two services share rows only on SQL backends.
* ``service``: ``await make_service()``, for tests that need just one.
* ``user`` / ``new_user()``: a random user id no other test uses.
* ``sql_backend`` and ``fresh_url``: for tests that need an empty database of their
  own (restarts, migrations, counting rows): ``fresh_url`` is the plain URL of a
  brand-new database of ``sql_backend`` (``sqlite``, ``postgresql``, ``mysql``),
  dropped after the test.

``anyio_backend`` is session-scoped (asyncio) so that the session-wide databases and
the tests run on one event loop.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agentsession.service import SessionService
from tests.databases import (
    BACKENDS,
    SQL_BACKENDS,
    dynamodb_service,
    dynamodb_table,
    fresh_database,
    redis_namespace,
    redis_service,
    sql_service,
)
from tests.dynamodb_local import TEST_AWS_ENV

ENV_VARS = (
    "SESSION_SECRET_KEY",
    "SESSION_SECRET_KEY_FALLBACKS",
    "SESSION_DATABASE_URL",
    "WEB_UI_GATEWAY_DATABASE_URL",
    "DATA_RETENTION_TASK_DAYS",
    "DATA_RETENTION_FEEDBACK_DAYS",
    "DATA_RETENTION_SESSION_DAYS",
    "DATA_RETENTION_CLEANUP_HOURS",
    "DATA_RETENTION_BATCH_SIZE",
    "SESSION_DYNAMODB_TABLE",
    "SESSION_DYNAMODB_ENDPOINT_URL",
    "SESSION_DYNAMODB_REGION",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
)

#: ``await make_service(ttl=None)``: a started service on the test's backend.
MakeService = Callable[..., Awaitable[SessionService]]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's session settings, and no app prunes unasked."""
    for name in ENV_VARS:
        # setenv first so that teardown restores the original state even when the
        # code under test sets the variable itself.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    # A middleware built without config= would start a retention scheduler whose runs
    # land in other tests' statement counts; the retention tests enable it themselves.
    monkeypatch.setenv("DATA_RETENTION_ENABLED", "false")
    # The DynamoDB store takes its credentials from the AWS chain: test ones, never the
    # developer's (DynamoDB Local accepts any).
    for name, value in TEST_AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# Users


def new_user() -> str:
    """A random user id, so that a test sees only its own rows in a shared database."""
    return f"user-{secrets.token_hex(8)}"


@pytest.fixture
def user() -> str:
    """A fresh random user id (see ``new_user``)."""
    return new_user()


# Backends and databases


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each store backend in turn: memory, sqlite, postgresql, mysql, redis, dynamodb."""
    return str(request.param)


@pytest.fixture(params=SQL_BACKENDS)
def sql_backend(request: pytest.FixtureRequest) -> str:
    """Each SQL backend in turn: ``sqlite``, ``postgresql``, ``mysql``."""
    return str(request.param)


class SharedDatabases:
    """One database per SQL backend for the whole test session, made on first use."""

    def __init__(self, directory: Path, stack: AsyncExitStack) -> None:
        self._directory = directory
        self._stack = stack
        self._urls: dict[str, str] = {}
        self._redis_prefix = ""

    async def url(self, backend: str) -> str:
        """The shared database of ``backend`` (skips or fails as ``fresh_database`` does)."""
        if backend not in self._urls:
            self._urls[backend] = await self._stack.enter_async_context(
                fresh_database(backend, self._directory)
            )
        return self._urls[backend]

    async def redis(self) -> tuple[str, str]:
        """The session-wide Redis namespace: ``(url, key_prefix)``."""
        if "redis" not in self._urls:
            url, prefix = await self._stack.enter_async_context(redis_namespace())
            self._urls["redis"] = url
            self._redis_prefix = prefix
        return self._urls["redis"], self._redis_prefix


@pytest.fixture(scope="session")
async def shared_databases(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[SharedDatabases]:
    """The session-wide databases; all are dropped when the test session ends."""
    async with AsyncExitStack() as stack:
        yield SharedDatabases(tmp_path_factory.mktemp("shared-databases"), stack)


@pytest.fixture
async def make_service(
    backend: str, shared_databases: SharedDatabases
) -> AsyncIterator[MakeService]:
    """``await make_service(ttl=None)``: a started service on ``backend``, closed at teardown."""
    services: list[SessionService] = []
    tables = AsyncExitStack()
    table: list[tuple[str, str]] = []  # this test's DynamoDB table, made on first use

    async def make(ttl: int | None = None) -> SessionService:
        if backend == "dynamodb":
            if not table:
                table.append(await tables.enter_async_context(dynamodb_table()))
            service = dynamodb_service(*table[0], ttl=ttl)
        elif backend == "memory":
            from agentsession.stores.memory import MemoryStore

            service = SessionService(MemoryStore(), ttl=ttl)
        elif backend == "redis":
            url, prefix = await shared_databases.redis()
            service = redis_service(url, prefix, ttl=ttl)
        else:
            service = sql_service(await shared_databases.url(backend), ttl=ttl)
        services.append(service)
        await service.start()
        return service

    try:
        yield make
    finally:
        try:
            for service in reversed(services):
                await service.close()
        finally:
            await tables.aclose()


@pytest.fixture
async def service(make_service: MakeService) -> SessionService:
    """A started service (no TTL) on ``backend``."""
    return await make_service()


@pytest.fixture
async def fresh_url(sql_backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a brand-new, empty database of ``sql_backend``, dropped afterwards."""
    async with fresh_database(sql_backend, tmp_path) as url:
        yield url
