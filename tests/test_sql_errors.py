"""Database errors, classified once (``stores.sql.errors.translate``), on real servers.

Every case is a real error from a real server or driver: a database or role that is
not there, a privilege taken away, a closed port, connections terminated or killed
by the server, statement and lock timeouts, connection limits. The codes a single
server cannot be made to produce on demand (the shutdown and start-up codes of class
57, "too many connections" of the whole server) are raised by the server itself with
``RAISE ... USING ERRCODE`` (PostgreSQL) and ``SIGNAL ... SET MYSQL_ERRNO``
(MariaDB), so the driver and SQLAlchemy still build the exception they build in an
outage. PostgreSQL and MariaDB come from AGENTSESSION_TEST_POSTGRES_URL and
AGENTSESSION_TEST_MYSQL_URL: skipped locally without them, a failure in CI.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomysql
import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import create_async_engine

from agentsession.errors import ConfigError, StoreMisconfigured, StoreUnavailable
from agentsession.stores.sql.engine import mask_url, normalize_url
from agentsession.stores.sql.errors import is_deadlock, translate
from agentsession.stores.sql.store import DEADLOCK_RETRIES, SqlStore
from tests.apps import client_for
from tests.databases import fresh_database, server_url, sql_service, store_of
from tests.proxy import free_port

pytestmark = pytest.mark.anyio

PG = "AGENTSESSION_TEST_POSTGRES_URL"
MYSQL = "AGENTSESSION_TEST_MYSQL_URL"

DATABASE_HINT = "create it or fix session_service.database_url"
LOGIN_HINT = (
    "check the user name and password in session_service.database_url, "
    "and that the server lets this user connect from this host"
)
PRIVILEGE_HINT = (
    "grant this user the rights to create and use agentsession's tables, "
    "or put another user in session_service.database_url"
)
SCHEMA_HINT = (
    "create the schema, or fix the search_path of the user in session_service.database_url"
)
FILE_HINT = (
    "check that the file's directory exists and this process may write there, "
    "or fix session_service.database_url"
)


# URLs, admin connections, throwaway roles and users


def masked(url: str) -> str:
    """``url`` as the messages show it: the async driver's name, the password masked."""
    return mask_url(normalize_url(url))


def on_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def as_user(url: str, user: str, password: str | None = None) -> str:
    parts = urlsplit(url)
    login = user if password is None else f"{user}:{password}"
    return parts._replace(netloc=f"{login}@{parts.hostname}:{parts.port}").geturl()


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def plain(url: str) -> str:
    """A URL asyncpg itself accepts."""
    return url.replace("+asyncpg", "")


async def pg_connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(plain(url), timeout=10)


async def pg_admin(url: str, *statements: str) -> None:
    """Run ``statements`` as the server's test user on the database of ``url``."""
    connection = await pg_connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def mysql_connect(url: str, *, database: bool = False) -> aiomysql.Connection:
    parts = urlsplit(url)
    return await aiomysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        db=database_of(url) if database else None,
        connect_timeout=10,
        autocommit=True,
    )


async def mysql_admin(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run ``statements`` as the server's test user; the rows of the last one."""
    connection = await mysql_connect(url)
    try:
        async with connection.cursor() as cursor:
            for statement in statements:
                await cursor.execute(statement)
            return list(await cursor.fetchall())
    finally:
        connection.close()


@asynccontextmanager
async def pg_role(*options: str) -> AsyncIterator[str]:
    """A throwaway login role (trust auth: no password needed), dropped afterwards.

    Enter it before the database it gets rights on, so that the database (and with it
    the role's privileges there) is dropped first.
    """
    server = server_url(PG)
    name = f"agentsession_r_{secrets.token_hex(6)}"
    await pg_admin(server, f'CREATE ROLE "{name}" LOGIN {" ".join(options)}')
    try:
        yield name
    finally:
        await pg_admin(server, f'DROP ROLE IF EXISTS "{name}"')


@asynccontextmanager
async def mysql_user(password: str, *options: str) -> AsyncIterator[str]:
    """A throwaway MariaDB user with ``password`` and no privileges, dropped afterwards."""
    server = server_url(MYSQL)
    name = f"as_u_{secrets.token_hex(6)}"
    await mysql_admin(
        server, f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}' {' '.join(options)}"
    )
    try:
        yield name
    finally:
        await mysql_admin(server, f"DROP USER IF EXISTS '{name}'@'%'")


async def migrated(url: str) -> None:
    """Bring the database of ``url`` to head, as the server's test user."""
    async with sql_service(url):
        pass


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and everything it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def sqlstates(error: BaseException) -> set[str]:
    return {str(getattr(cause, "sqlstate", None)) for cause in causes(error)}


def counting(store: SqlStore, needle: str) -> list[str]:
    """The statements containing ``needle`` the store's engine executes from now on."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if needle in statement:
            seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    return seen


async def failure(call: Awaitable[Any]) -> BaseException | None:
    """What ``call`` raised, or None."""
    try:
        await call
    except Exception as error:
        return error
    return None


def outage(error: BaseException) -> bool:
    """A plain ``StoreUnavailable``: not the misconfiguration subclass."""
    return isinstance(error, StoreUnavailable) and not isinstance(error, StoreMisconfigured)


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    async with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
async def mysql_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty MariaDB database, dropped afterwards."""
    async with fresh_database("mysql", tmp_path) as url:
        yield url


# The new exception


def test_store_misconfigured_is_both_a_config_error_and_store_unavailable() -> None:
    error = StoreMisconfigured("postgresql+asyncpg://bob@db/nope: database does not exist")
    assert isinstance(error, ConfigError)
    assert isinstance(error, ValueError)  # as every ConfigError
    assert isinstance(error, StoreUnavailable)
    with pytest.raises(ConfigError):  # startup and the CLI: configuration to fix
        raise error
    with pytest.raises(StoreUnavailable):  # a request: 503, not 500
        raise error


# PostgreSQL: misconfiguration


async def test_postgresql_missing_database() -> None:
    name = f"agentsession_missing_{secrets.token_hex(6)}"
    url = on_database(server_url(PG), name)
    service = sql_service(url)
    with pytest.raises(StoreMisconfigured) as raised:
        await service.start()
    await service.close()
    assert str(raised.value) == f'{masked(url)}: database "{name}" does not exist; {DATABASE_HINT}'
    assert "3D000" in sqlstates(raised.value)


async def test_postgresql_unknown_role() -> None:
    role = f"agentsession_nobody_{secrets.token_hex(4)}"
    url = as_user(server_url(PG), role)
    service = sql_service(url)
    with pytest.raises(StoreMisconfigured) as raised:
        await service.start()
    await service.close()
    assert str(raised.value) == f'{masked(url)}: role "{role}" does not exist; {LOGIN_HINT}'


async def test_postgresql_no_right_to_create_the_tables(tmp_path: Path) -> None:
    """The migration's CREATE TABLE fails for want of a privilege: say so, no traceback."""
    async with pg_role() as role, fresh_database("postgresql", tmp_path) as url:
        # PostgreSQL 15's default; older servers let everyone create in public.
        await pg_admin(url, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        service = sql_service(as_user(url, role))
        with pytest.raises(StoreMisconfigured) as raised:
            await service.start()
        await service.close()
    expected = f"{masked(as_user(url, role))}: permission denied for schema public"
    assert str(raised.value) == f"{expected}; {PRIVILEGE_HINT}"


async def test_postgresql_no_privilege_on_a_table_during_a_call(tmp_path: Path) -> None:
    async with pg_role() as role, fresh_database("postgresql", tmp_path) as url:
        await migrated(url)
        # Enough to see that the schema is at head, nothing more.
        await pg_admin(url, f'GRANT SELECT ON agentsession_alembic_version TO "{role}"')
        async with sql_service(as_user(url, role)) as service:
            with pytest.raises(StoreMisconfigured) as raised:
                await service.list_sessions("alice")
    expected = f"{masked(as_user(url, role))}: permission denied for table sessions"
    assert str(raised.value) == f"{expected}; {PRIVILEGE_HINT}"


async def test_postgresql_no_schema_to_create_in(tmp_path: Path) -> None:
    async with pg_role() as role, fresh_database("postgresql", tmp_path) as url:
        await pg_admin(
            url, f'ALTER ROLE "{role}" IN DATABASE "{database_of(url)}" SET search_path = \'\''
        )
        service = sql_service(as_user(url, role))
        with pytest.raises(StoreMisconfigured) as raised:
            await service.start()
        await service.close()
    expected = f"{masked(as_user(url, role))}: no schema has been selected to create in"
    assert str(raised.value) == f"{expected}; {SCHEMA_HINT}"


async def test_a_misconfiguration_during_a_request_is_503(tmp_path: Path) -> None:
    """A privilege revoked while the app runs: 503 with Retry-After, never a 500."""
    from tests.test_api import PREFIX, fastapi_app

    async with pg_role() as role, fresh_database("postgresql", tmp_path) as url:
        await migrated(url)
        await pg_admin(url, f'GRANT SELECT ON agentsession_alembic_version TO "{role}"')
        async with sql_service(as_user(url, role)) as service:
            app = fastapi_app(service)
            async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
                response = await client.get("/sessions", headers={"x-user": "alice"})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    assert int(response.headers["retry-after"]) > 0


# PostgreSQL: outages


async def test_postgresql_closed_port() -> None:
    url = "postgresql://postgres:secretpw@127.0.0.1:1/test"
    service = sql_service(url)
    with pytest.raises(StoreUnavailable) as raised:
        await service.start()
    await service.close()
    assert outage(raised.value)
    assert str(raised.value) == (
        "postgresql+asyncpg://postgres:***@127.0.0.1:1/test: "
        "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    )


async def test_postgresql_too_many_connections_for_the_role(tmp_path: Path) -> None:
    async with pg_role("CONNECTION LIMIT 1") as role, fresh_database("postgresql", tmp_path) as url:
        await migrated(url)
        held = await pg_connect(as_user(url, role))  # the role's only connection
        try:
            service = sql_service(as_user(url, role))
            with pytest.raises(StoreUnavailable) as raised:
                await service.start()
            await service.close()
        finally:
            await held.close()
    assert outage(raised.value)
    expected = f'too many connections for role "{role}" (53300)'
    assert str(raised.value) == f"{masked(as_user(url, role))}: {expected}"


async def test_postgresql_statement_timeout(pg_url: str) -> None:
    await migrated(pg_url)
    # New sessions of this database only (the server is shared).
    await pg_admin(
        pg_url, f"ALTER DATABASE \"{database_of(pg_url)}\" SET statement_timeout = '200ms'"
    )
    async with sql_service(pg_url) as service:
        with pytest.raises(StoreUnavailable) as raised:
            await store_of(service)._run(text("SELECT pg_sleep(5)"), fetch=True)
        assert outage(raised.value)
        assert str(raised.value) == (
            f"{masked(pg_url)}: canceling statement due to statement timeout (57014)"
        )
        assert (await service.list_sessions("alice")).items == []  # and it goes on


async def test_postgresql_lock_timeout(pg_url: str) -> None:
    await migrated(pg_url)
    await pg_admin(pg_url, f"ALTER DATABASE \"{database_of(pg_url)}\" SET lock_timeout = '200ms'")
    async with sql_service(pg_url) as service:
        holder = await pg_connect(pg_url)
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(StoreUnavailable) as raised:
                    await service.list_sessions("alice")
        finally:
            await holder.close()
        assert (await service.list_sessions("alice")).items == []
    assert outage(raised.value)
    assert str(raised.value) == f"{masked(pg_url)}: canceling statement due to lock timeout (55P03)"


async def terminate(url: str, query: str = "%") -> int:
    """``pg_terminate_backend`` the store's connections to the database of ``url``
    (those running a query like ``query``); wait until they are gone."""
    admin = await pg_connect(server_url(PG))
    try:
        pids = [
            row[0]
            for row in await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE $2",
                database_of(url),
                query,
            )
        ]
        for pid in pids:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(200):
            left = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
            )
            if left == 0:
                break
            await asyncio.sleep(0.025)
        return len(pids)
    finally:
        await admin.close()


async def running(url: str, query: str) -> None:
    """Wait until a statement like ``query`` runs on the database of ``url``."""
    admin = await pg_connect(server_url(PG))
    try:
        for _ in range(400):
            found = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = $1 AND state = 'active' AND query LIKE $2",
                database_of(url),
                query,
            )
            if found:
                return
            await asyncio.sleep(0.025)
        pytest.fail(f"{query!r} never ran")
    finally:
        await admin.close()


async def test_postgresql_terminated_idle_connections(pg_url: str) -> None:
    """The pool's connections killed server-side: the next calls reconnect (pre-ping),
    or at worst say StoreUnavailable; never a raw DBAPIError."""
    async with sql_service(pg_url) as service:
        conversation = await service.create_session("alice", name="kept")
        calls = [service.get_session("alice", conversation.id) for _ in range(5)]
        await asyncio.gather(*calls)  # several pooled connections
        assert await terminate(pg_url) >= 1
        failures = [await failure(service.get_session("alice", conversation.id)) for _ in range(3)]
        assert all(error is None or outage(error) for error in failures), failures
        assert (await service.get_session("alice", conversation.id)).name == "kept"


async def test_postgresql_terminated_during_a_statement(pg_url: str) -> None:
    """The server's 57P01 (admin_shutdown) reaches asyncpg as 08003 with the 57P01 kept."""
    async with sql_service(pg_url) as service:
        store = store_of(service)
        sleeping = asyncio.create_task(store._run(text("SELECT pg_sleep(30)"), fetch=True))
        await running(pg_url, "SELECT pg_sleep%")
        assert await terminate(pg_url, "SELECT pg_sleep%") == 1
        with pytest.raises(StoreUnavailable) as raised:
            await asyncio.wait_for(sleeping, timeout=10)
        assert outage(raised.value)
        assert str(raised.value) == (
            f"{masked(pg_url)}: connection was closed in the middle of operation: "
            "terminating connection due to administrator command (08003)"
        )
        assert {"08003", "57P01"} <= sqlstates(raised.value)
        assert (await service.list_sessions("alice")).items == []  # a new connection


async def test_postgresql_database_dropped_under_the_store(pg_url: str) -> None:
    """Dropped while a statement runs: an outage; afterwards: misconfiguration.

    (The server's own 57P04 database_dropped is only raised on a standby, for a
    recovery conflict; a primary ends the backends with 57P01, as here. 57P04 is
    covered by ``test_postgresql_codes``.)
    """
    name = database_of(pg_url)
    async with sql_service(pg_url) as service:
        store = store_of(service)
        sleeping = asyncio.create_task(store._run(text("SELECT pg_sleep(30)"), fetch=True))
        await running(pg_url, "SELECT pg_sleep%")
        await pg_admin(server_url(PG), f'DROP DATABASE "{name}" WITH (FORCE)')
        with pytest.raises(StoreUnavailable) as during:
            await asyncio.wait_for(sleeping, timeout=10)
        assert outage(during.value)
        assert "57P01" in sqlstates(during.value)
        with pytest.raises(StoreMisconfigured) as after:
            await service.list_sessions("alice")
    assert (
        str(after.value) == f'{masked(pg_url)}: database "{name}" does not exist; {DATABASE_HINT}'
    )


# Every PostgreSQL code of the table, raised by the server itself

UNAVAILABLE = "unavailable"
MISCONFIGURED = "misconfigured"
AS_IS = "as is"

PG_CODES = [
    ("08000", UNAVAILABLE),
    ("08003", UNAVAILABLE),
    ("08006", UNAVAILABLE),
    ("08P01", UNAVAILABLE),
    ("53000", UNAVAILABLE),
    ("53100", UNAVAILABLE),
    ("53200", UNAVAILABLE),
    ("53300", UNAVAILABLE),
    ("57000", UNAVAILABLE),
    ("57014", UNAVAILABLE),
    ("57P01", UNAVAILABLE),
    ("57P02", UNAVAILABLE),
    ("57P03", UNAVAILABLE),
    ("57P04", UNAVAILABLE),
    ("57P05", UNAVAILABLE),
    ("55P03", UNAVAILABLE),
    ("40001", UNAVAILABLE),
    ("40P01", UNAVAILABLE),
    ("25006", UNAVAILABLE),
    ("58030", UNAVAILABLE),
    ("3D000", MISCONFIGURED),
    ("28000", MISCONFIGURED),
    ("28P01", MISCONFIGURED),
    ("42501", MISCONFIGURED),
    ("3F000", MISCONFIGURED),
    ("23505", AS_IS),  # unique_violation
    ("42P01", AS_IS),  # undefined_table
    ("42601", AS_IS),  # syntax_error
    ("22012", AS_IS),  # division_by_zero
    ("P0001", AS_IS),  # raise_exception
]


@pytest.mark.parametrize(("code", "outcome"), PG_CODES)
async def test_postgresql_codes(code: str, outcome: str) -> None:
    url = server_url(PG)
    message = f"server says {code}"
    raise_it = text(
        f"DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{message}'; END $$"
    )
    store = SqlStore(url, pool_size=1)
    seen = counting(store, "RAISE EXCEPTION")
    try:
        with pytest.raises((StoreUnavailable, sa_exc.DBAPIError)) as raised:
            await store._run(raise_it)
    finally:
        await store.close()
    error = raised.value
    if outcome == UNAVAILABLE:
        assert outage(error)
        assert str(error) == f"{masked(url)}: {message} ({code})"
    elif outcome == MISCONFIGURED:
        assert isinstance(error, StoreMisconfigured)
        assert str(error).startswith(f"{masked(url)}: {message}; ")
        assert "session_service.database_url" in str(error)
    else:
        assert isinstance(error, sa_exc.DBAPIError), error
        assert translate(error, url) is None
    assert code in sqlstates(error)
    # Deadlock victims are run again; what still fails then is an outage.
    retried = code in ("40001", "40P01")
    assert len(seen) == (DEADLOCK_RETRIES + 1 if retried else 1)


async def test_postgresql_a_deadlock(pg_url: str) -> None:
    """A real deadlock between two transactions: recognised, and an outage if it stays."""
    engine = create_async_engine(normalize_url(pg_url))
    try:
        async with engine.begin() as setup:
            await setup.execute(text("CREATE TABLE a (x INT)"))
            await setup.execute(text("CREATE TABLE b (x INT)"))
        async with engine.connect() as one, engine.connect() as two:
            await one.execute(text("LOCK TABLE a IN ACCESS EXCLUSIVE MODE"))
            await two.execute(text("LOCK TABLE b IN ACCESS EXCLUSIVE MODE"))

            async def cross(connection: Any, table: str, pause: float) -> None:
                await asyncio.sleep(pause)
                await connection.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))

            results = await asyncio.gather(
                cross(one, "b", 0), cross(two, "a", 0.2), return_exceptions=True
            )
            await one.rollback()
            await two.rollback()
    finally:
        await engine.dispose()
    errors = [result for result in results if isinstance(result, BaseException)]
    assert len(errors) == 1, results
    deadlock = errors[0]
    assert isinstance(deadlock, sa_exc.DBAPIError)
    assert is_deadlock(deadlock)
    translated = translate(deadlock, pg_url)
    assert translated is not None
    assert outage(translated)
    assert str(translated).endswith("deadlock detected (40P01)")


async def test_asyncpg_argument_errors_are_not_outages() -> None:
    """asyncpg's DataError is an InterfaceError subclass, but a bug, not a dead link."""
    url = server_url(PG)
    store = SqlStore(url, pool_size=1)
    try:
        with pytest.raises(sa_exc.DBAPIError) as raised:
            await store._run(text("SELECT CAST(:x AS INTEGER)").bindparams(x="abc"), fetch=True)
    finally:
        await store.close()
    assert not isinstance(raised.value, StoreUnavailable)
    assert translate(raised.value, url) is None


ASYNCPG_ERRORS = [
    (asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"), UNAVAILABLE),
    (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), UNAVAILABLE),
    (asyncpg.exceptions.CannotConnectNowError("not yet accepting connections"), UNAVAILABLE),
    (asyncpg.exceptions.AdminShutdownError("terminating connection"), UNAVAILABLE),
    (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), UNAVAILABLE),
    (asyncpg.exceptions.ConnectionFailureError("connection failure"), UNAVAILABLE),
    (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients"), UNAVAILABLE),
    (asyncpg.exceptions.InterfaceError("connection is closed"), UNAVAILABLE),
    (asyncpg.exceptions.InvalidCatalogNameError('database "x" does not exist'), MISCONFIGURED),
    (asyncpg.exceptions.InvalidPasswordError("password authentication failed"), MISCONFIGURED),
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), AS_IS),
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), AS_IS),
]


@pytest.mark.parametrize(
    ("driver_error", "outcome"), ASYNCPG_ERRORS, ids=[repr(e) for e, _ in ASYNCPG_ERRORS]
)
async def test_asyncpg_errors_at_connect(driver_error: Exception, outcome: str) -> None:
    """What asyncpg raises while connecting (a server restarting: 57P03), through
    SQLAlchemy's own connect path: wrapped by 2.1, let through as it is by 2.0."""

    async def connect() -> Any:
        raise driver_error

    url = "postgresql+asyncpg://app:secretpw@db.example:5432/app"
    engine = create_async_engine(url, async_creator=connect)
    try:
        # SQLAlchemy 2.1 wraps it in a DBAPIError; 2.0 lets it through.
        with pytest.raises((sa_exc.DBAPIError, type(driver_error))) as raised:
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    for error in (raised.value, driver_error):  # as SQLAlchemy raises it, and bare
        translated = translate(error, url)
        if outcome == AS_IS:
            assert translated is None
            continue
        assert translated is not None
        assert str(translated).startswith("postgresql+asyncpg://app:***@db.example:5432/app: ")
        assert "secretpw" not in str(translated)
        assert isinstance(translated, StoreMisconfigured) == (outcome == MISCONFIGURED)


# MariaDB / MySQL: misconfiguration


async def test_mysql_missing_database() -> None:
    name = f"agentsession_missing_{secrets.token_hex(6)}"
    url = on_database(server_url(MYSQL), name)
    service = sql_service(url)
    with pytest.raises(StoreMisconfigured) as raised:
        await service.start()
    await service.close()
    assert str(raised.value) == f"{masked(url)}: Unknown database '{name}'; {DATABASE_HINT}"


async def test_mysql_wrong_password(mysql_url: str) -> None:
    async with mysql_user("right-pw") as user:
        url = as_user(mysql_url, user, "wrong-pw")
        service = sql_service(url)
        with pytest.raises(StoreMisconfigured) as raised:
            await service.start()
        await service.close()
    message = str(raised.value)
    assert message.startswith(f"{masked(url)}: Access denied for user '{user}'@")
    assert message.endswith(f"(using password: YES); {LOGIN_HINT}")
    assert "wrong-pw" not in message
    assert ":***@" in message


async def test_mysql_unknown_user(mysql_url: str) -> None:
    user = f"as_nobody_{secrets.token_hex(4)}"
    url = as_user(mysql_url, user, "x")
    service = sql_service(url)
    with pytest.raises(StoreMisconfigured) as raised:
        await service.start()
    await service.close()
    assert str(raised.value).startswith(f"{masked(url)}: Access denied for user '{user}'@")
    assert str(raised.value).endswith(LOGIN_HINT)


async def test_mysql_no_access_to_the_database(mysql_url: str) -> None:
    async with mysql_user("pw") as user:
        url = as_user(mysql_url, user, "pw")
        service = sql_service(url)
        with pytest.raises(StoreMisconfigured) as raised:
            await service.start()
        await service.close()
    message = str(raised.value)
    assert message.startswith(f"{masked(url)}: Access denied for user '{user}'@")
    assert message.endswith(f"to database '{database_of(mysql_url)}'; {PRIVILEGE_HINT}")


async def test_mysql_no_privilege_on_a_table_during_a_call(mysql_url: str) -> None:
    await migrated(mysql_url)
    async with mysql_user("pw") as user:
        database = database_of(mysql_url)
        await mysql_admin(
            mysql_url, f"GRANT SELECT ON `{database}`.agentsession_alembic_version TO '{user}'@'%'"
        )
        async with sql_service(as_user(mysql_url, user, "pw")) as service:
            with pytest.raises(StoreMisconfigured) as raised:
                await service.list_sessions("alice")
    message = str(raised.value)
    url = as_user(mysql_url, user, "pw")
    assert message.startswith(f"{masked(url)}: SELECT command denied to user '{user}'@")
    assert message.endswith(f"for table `{database}`.`sessions`; {PRIVILEGE_HINT}")


# MariaDB / MySQL: outages


async def test_mysql_closed_port() -> None:
    url = "mysql://root:secretpw@127.0.0.1:1/test"
    service = sql_service(url)
    with pytest.raises(StoreUnavailable) as raised:
        await service.start()
    await service.close()
    assert outage(raised.value)
    assert str(raised.value) == (
        "mysql+aiomysql://root:***@127.0.0.1:1/test: "
        "Can't connect to MySQL server on '127.0.0.1' (2003)"
    )


async def test_mysql_too_many_connections_for_the_user(mysql_url: str) -> None:
    await migrated(mysql_url)
    async with mysql_user("pw", "WITH MAX_USER_CONNECTIONS 1") as user:
        await mysql_admin(mysql_url, f"GRANT ALL ON `{database_of(mysql_url)}`.* TO '{user}'@'%'")
        url = as_user(mysql_url, user, "pw")
        held = await mysql_connect(url)
        try:
            service = sql_service(url)
            with pytest.raises(StoreUnavailable) as raised:
                await service.start()
            await service.close()
        finally:
            held.close()
    assert outage(raised.value)
    assert str(raised.value) == (
        f"{masked(url)}: User '{user}' has exceeded the 'max_user_connections' resource "
        "(current value: 1) (1226)"
    )


async def test_mysql_max_statement_time(mysql_url: str) -> None:
    async with sql_service(mysql_url) as service:
        statement = text("SET STATEMENT max_statement_time = 0.2 FOR SELECT SLEEP(5)")
        with pytest.raises(StoreUnavailable) as raised:
            await store_of(service)._run(statement, fetch=True)
        assert (await service.list_sessions("alice")).items == []
    assert outage(raised.value)
    assert str(raised.value) == (
        f"{masked(mysql_url)}: Query execution was interrupted (max_statement_time exceeded) (1969)"
    )


async def test_mysql_lock_wait_after_the_retries(mysql_url: str) -> None:
    """1205 is run again like a deadlock; still locked after the retries: an outage."""
    async with sql_service(mysql_url) as service:
        conversation = await service.create_session("alice")
        store = store_of(service)
        holder = await mysql_connect(mysql_url, database=True)
        try:
            async with holder.cursor() as cursor:
                await cursor.execute("BEGIN")
                await cursor.execute(
                    "SELECT id FROM sessions WHERE id = %s FOR UPDATE", (conversation.id,)
                )
                seen = counting(store, "NOWAIT")
                locked = text("SELECT id FROM sessions WHERE id = :id FOR UPDATE NOWAIT")
                with pytest.raises(StoreUnavailable) as raised:
                    await store._run(locked.bindparams(id=conversation.id), fetch=True)
                await cursor.execute("ROLLBACK")
        finally:
            holder.close()
    assert outage(raised.value)
    assert str(raised.value).endswith(
        "Lock wait timeout exceeded; try restarting transaction (1205)"
    )
    assert len(seen) == DEADLOCK_RETRIES + 1


async def kill(url: str, info: str = "%") -> int:
    """``KILL`` the connections to the database of ``url`` (running ``info``, if given)."""
    ids = await mysql_admin(
        url,
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = "
        f"'{database_of(url)}' AND ID <> CONNECTION_ID() AND COALESCE(INFO, '') LIKE '{info}'",
    )
    for (connection_id,) in ids:
        await mysql_admin(url, f"KILL {int(connection_id)}")
    return len(ids)


async def test_mysql_killed_idle_connections(mysql_url: str) -> None:
    async with sql_service(mysql_url) as service:
        conversation = await service.create_session("alice", name="kept")
        calls = [service.get_session("alice", conversation.id) for _ in range(5)]
        await asyncio.gather(*calls)
        assert await kill(mysql_url) >= 1
        await asyncio.sleep(0.1)
        failures = [await failure(service.get_session("alice", conversation.id)) for _ in range(3)]
        assert all(error is None or outage(error) for error in failures), failures
        assert (await service.get_session("alice", conversation.id)).name == "kept"


async def test_mysql_killed_during_a_statement(mysql_url: str) -> None:
    async with sql_service(mysql_url) as service:
        store = store_of(service)
        sleeping = asyncio.create_task(store._run(text("SELECT SLEEP(30)"), fetch=True))
        for _ in range(400):
            if await kill(mysql_url, "SELECT SLEEP%"):
                break
            await asyncio.sleep(0.025)
        else:
            pytest.fail("SELECT SLEEP(30) never ran")
        with pytest.raises(StoreUnavailable) as raised:
            await asyncio.wait_for(sleeping, timeout=10)
        assert outage(raised.value)
        assert str(raised.value).startswith(f"{masked(mysql_url)}: ")
        assert (await service.list_sessions("alice")).items == []


MYSQL_CODES = [
    (1040, UNAVAILABLE),  # too many connections
    (1053, UNAVAILABLE),  # server shutdown in progress
    (1205, UNAVAILABLE),  # lock wait timeout (retried first)
    (1213, UNAVAILABLE),  # deadlock (retried first)
    (1290, UNAVAILABLE),  # --read-only
    (1317, UNAVAILABLE),  # query interrupted
    (1927, UNAVAILABLE),  # connection killed
    (1969, UNAVAILABLE),  # max_statement_time
    (3024, UNAVAILABLE),  # max_execution_time
    (4031, UNAVAILABLE),  # disconnected for inactivity
    (2006, UNAVAILABLE),  # server has gone away
    (2013, UNAVAILABLE),  # lost connection
    (2055, UNAVAILABLE),  # lost connection at ...
    (1049, MISCONFIGURED),  # unknown database
    (1045, MISCONFIGURED),  # access denied
    (1698, MISCONFIGURED),  # access denied (MariaDB, unknown user)
    (4151, MISCONFIGURED),  # account locked (MariaDB)
    (1044, MISCONFIGURED),  # no access to the database
    (1142, MISCONFIGURED),  # command denied on a table
    (1227, MISCONFIGURED),  # needs SUPER or similar
    (1062, AS_IS),  # duplicate entry
    (1054, AS_IS),  # unknown column (an OperationalError in pymysql)
    (1146, AS_IS),  # no such table
    (1064, AS_IS),  # syntax error
]


@pytest.mark.parametrize(("errno", "outcome"), MYSQL_CODES)
async def test_mysql_codes(errno: int, outcome: str) -> None:
    url = server_url(MYSQL)
    message = f"server says {errno}"
    signal = text(f"SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = {errno}, MESSAGE_TEXT = '{message}'")
    store = SqlStore(url, pool_size=1)
    seen = counting(store, "SIGNAL")
    try:
        with pytest.raises((StoreUnavailable, sa_exc.DBAPIError)) as raised:
            await store._run(signal)
    finally:
        await store.close()
    error = raised.value
    if outcome == UNAVAILABLE:
        assert outage(error)
        assert str(error) == f"{masked(url)}: {message} ({errno})"
    elif outcome == MISCONFIGURED:
        assert isinstance(error, StoreMisconfigured)
        assert str(error).startswith(f"{masked(url)}: {message}; ")
    else:
        assert isinstance(error, sa_exc.DBAPIError), error
        assert translate(error, url) is None
    retried = errno in (1205, 1213)
    assert len(seen) == (DEADLOCK_RETRIES + 1 if retried else 1)


async def test_aiomysql_not_connected_is_an_outage() -> None:
    url = server_url(MYSQL)
    connection = await mysql_connect(url)
    connection.close()
    with pytest.raises(aiomysql.InterfaceError) as raised:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
    translated = translate(raised.value, url)
    assert translated is not None
    assert outage(translated)


# SQLite


async def test_sqlite_directory_missing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'sessions.db'}"
    service = sql_service(url)
    with pytest.raises(StoreMisconfigured) as raised:
        await service.start()
    await service.close()
    assert str(raised.value) == f"{masked(url)}: unable to open database file; {FILE_HINT}"


async def test_sqlite_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the tables you are looking for\n" * 100)
    url = f"sqlite:///{path}"
    service = sql_service(url)
    with pytest.raises(StoreMisconfigured) as raised:
        await service.start()
    await service.close()
    assert str(raised.value) == f"{masked(url)}: file is not a database; {FILE_HINT}"


def sqlite_error(
    path: Path, work: str, *, holder: str | None = None, uri: bool = False
) -> sqlite3.Error:
    """The error sqlite3 raises for ``work`` (while another connection ran ``holder``)."""
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE IF NOT EXISTS t (a INTEGER PRIMARY KEY)")
    if holder:
        setup.execute(holder)
    target = f"file:{path}?mode=ro" if uri else str(path)
    other = sqlite3.connect(target, timeout=0, isolation_level=None, uri=uri)
    try:
        other.execute(work)
    except sqlite3.Error as error:
        return error
    finally:
        other.close()
        setup.close()
    raise AssertionError(f"{work!r} did not fail")


def test_sqlite_busy_is_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    error = sqlite_error(path, "SELECT * FROM t", holder="BEGIN EXCLUSIVE")
    translated = translate(error, f"sqlite:///{path}")
    assert translated is not None
    assert outage(translated)
    assert str(translated) == f"sqlite:///{path}: database is locked (SQLITE_BUSY)"


def test_sqlite_read_only_is_misconfigured(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    error = sqlite_error(path, "INSERT INTO t VALUES (1)", uri=True)
    translated = translate(error, f"sqlite:///{path}")
    assert isinstance(translated, StoreMisconfigured)
    assert str(translated) == f"sqlite:///{path}: attempt to write a readonly database; {FILE_HINT}"


async def test_sqlite_sql_errors_stay_as_they_are(tmp_path: Path) -> None:
    """A missing table or a duplicate key is a bug, not an outage (no 503 to hide it)."""
    store = SqlStore(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(sa_exc.OperationalError) as missing:
            await store._run(text("SELECT * FROM no_such_table"), fetch=True)
        await store._run(text("CREATE TABLE t (a INTEGER PRIMARY KEY)"))
        await store._run(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(sa_exc.IntegrityError) as duplicate:
            await store._run(text("INSERT INTO t VALUES (1)"))
    finally:
        await store.close()
    assert not isinstance(missing.value, StoreUnavailable)
    assert translate(duplicate.value, store.url) is None


# Errors that are not the database's


async def test_os_errors_at_connect_are_outages() -> None:
    url = "postgresql://app:secretpw@127.0.0.1:5432/app"
    with pytest.raises(ConnectionRefusedError) as refused:
        socket.create_connection(("127.0.0.1", free_port()), timeout=5).close()
    with pytest.raises(socket.gaierror) as unknown:
        await asyncio.get_running_loop().getaddrinfo("no-such-host.invalid", 5432)
    prefix = "postgresql+asyncpg://app:***@127.0.0.1:5432/app"
    for error, expected in [
        (refused.value, f"{prefix}: ConnectionRefusedError: [Errno 111] Connection refused"),
        (unknown.value, f"{prefix}: gaierror: "),
        (TimeoutError(), f"{prefix}: TimeoutError"),
    ]:
        translated = translate(error, normalize_url(url))
        assert translated is not None
        assert outage(translated)
        assert str(translated).startswith(expected)


async def test_a_full_pool_is_an_outage(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}"
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    try:
        async with engine.connect():
            with pytest.raises(sa_exc.TimeoutError) as raised:
                async with engine.connect():
                    pass
    finally:
        await engine.dispose()
    translated = translate(raised.value, url)
    assert translated is not None
    assert outage(translated)
    assert str(translated).startswith(
        f"{url}: no free connection in the pool (QueuePool limit of size 1 overflow 0 reached"
    )
    assert "\n" not in str(translated)


@pytest.mark.parametrize(
    "error",
    [ValueError("x"), RuntimeError("x"), KeyError("x"), ConfigError("x"), StoreUnavailable("x")],
    ids=repr,
)
def test_other_errors_are_left_alone(error: Exception) -> None:
    assert translate(error, "sqlite:///x.db") is None
