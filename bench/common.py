"""What the benchmarks share: versions, the command line, options, the markdown file,
and creating and dropping server databases."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from agentsession.stores.sql import SqlStore

#: The backends a benchmark can run on, their names in reports, and where their servers are.
BACKENDS: tuple[str, ...] = ("sqlite", "postgresql", "mysql")
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}
DEFAULT_URLS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
}
URL_VARIABLES = {
    "postgresql": "AGENTSESSION_TEST_POSTGRES_URL",
    "mysql": "AGENTSESSION_TEST_MYSQL_URL",
}


def version_of(dist: str) -> str:
    """The installed version of ``dist``, or ``not installed``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    """How this benchmark was run, for the report."""
    return shlex.join(["python", *sys.argv])


def positive_int(value: str) -> int:
    """An argparse type: an int of at least 1 (``100_000`` allowed)."""
    number = int(value.replace("_", ""))
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def write_section(path: Path, title: str, section: str) -> None:
    """Create ``path`` or replace/append the section headed ``title``, keeping the rest.

    A section runs from its ``## `` title to the next ``## `` heading (or the end).
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start = text.find(title + "\n")
    if start == -1:
        prefix = text.rstrip("\n") + "\n\n" if text.strip() else ""
        new_text = prefix + section
    else:
        end = text.find("\n## ", start + len(title))
        tail = text[end + 1 :] if end != -1 else ""
        new_text = text[:start] + section + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new_text, encoding="utf-8")


def publish(section: str, path: Path | None, title: str) -> None:
    """Print a report section, and write it into the markdown file ``path`` if given."""
    print(section)
    if path is not None:
        write_section(path, title, section)
        print(f"(written to {path})", file=sys.stderr)


# Server databases


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


async def mysql_admin(url: str, sql: str) -> None:
    import aiomysql  # type: ignore[import-untyped]

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


async def postgres_admin(url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def url_of(backend: str, explicit: str | None) -> str:
    """The server URL for ``backend``: ``explicit``, else the test suite's variable, else local."""
    return explicit or os.environ.get(URL_VARIABLES[backend]) or DEFAULT_URLS[backend]


def backend_list(value: str) -> list[str]:
    """An argparse type: comma-separated names from ``BACKENDS``."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(BACKENDS)}, got {value!r}")
    return names


class Unavailable(RuntimeError):
    """A backend's server could not be reached (a database could not be created there)."""


@asynccontextmanager
async def fresh_database(backend: str, server: str | None, name: str) -> AsyncIterator[str]:
    """The URL of a new, empty database ``name`` (a file in a temporary directory for
    SQLite) on the ``backend`` server at ``url_of(backend, server)``; dropped afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="agentsession-bench-") as directory:
            yield f"sqlite:///{Path(directory) / f'{name}.db'}"
        return
    url = url_of(backend, server)
    if backend == "postgresql":
        admin = postgres_admin
        create = f'CREATE DATABASE "{name}"'
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        admin = mysql_admin
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        drop = f"DROP DATABASE IF EXISTS `{name}`"
    try:
        await admin(url, create)
    except Exception as exc:
        raise Unavailable(f"cannot create a database on {backend}: {exc!r}") from exc
    print(f"  created database {name}", file=sys.stderr)
    try:
        yield with_database(url, name)
    finally:
        await admin(url, drop)
        print(f"  dropped database {name}", file=sys.stderr)


#: Server settings that decide how writes and deletes cost, reported with the results.
PG_SETTINGS = (
    "autovacuum",
    "shared_buffers",
    "synchronous_commit",
    "full_page_writes",
    "wal_compression",
    "checkpoint_timeout",
    "max_wal_size",
)
MYSQL_SETTINGS = (
    "innodb_buffer_pool_size",
    "innodb_flush_log_at_trx_commit",
    "innodb_flush_method",
    "log_bin",
)


async def server_settings(store: SqlStore) -> str:
    """The write-path settings the server actually runs with, as ``name=value, ...``."""
    from sqlalchemy import text

    if store.dialect == "sqlite":
        return "defaults"
    async with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            rows = await connection.execute(
                text("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(:n)"),
                {"n": list(PG_SETTINGS)},
            )
            order: tuple[str, ...] = PG_SETTINGS
        else:
            names = ", ".join(f"'{name}'" for name in MYSQL_SETTINGS)
            rows = await connection.execute(
                text(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")
            )
            order = MYSQL_SETTINGS
        found = {str(name).lower(): str(value) for name, value in rows}
    return ", ".join(f"{name}={found[name]}" for name in order if name in found)


async def server_version(store: SqlStore) -> str:
    """The database server's name and version, for the report."""
    from sqlalchemy import func, select

    if store.dialect == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    async with store.engine.connect() as connection:
        version = str(await connection.scalar(select(func.version())))
    if store.dialect == "postgresql":
        return " ".join(version.split()[:2])
    return ("MariaDB " if "mariadb" in version.lower() else "MySQL ") + version.split("-")[0]


#: Seconds a run waits for another run to give MariaDB's buffer pool back.
POOL_LOCK_WAIT = 3600


@asynccontextmanager
async def buffer_pool(store: SqlStore, megabytes: int | None) -> AsyncIterator[None]:
    """MariaDB: ``innodb_buffer_pool_size`` set to ``megabytes`` for the run (online,
    ``SET GLOBAL``, MariaDB 10.2+), then put back, also on an error; None or 0 leaves
    it alone. One run at a time resizes it (a named lock)."""
    import asyncio
    import time

    from sqlalchemy import text

    if not megabytes or store.dialect != "mysql":
        yield
        return
    query = text("SELECT @@GLOBAL.innodb_buffer_pool_size")
    async with store.engine.connect() as connection:
        # A resize under another run's load fails its statements (error 1206), and each
        # run would put back what the other had set.
        lock = "SELECT GET_LOCK('agentsession_bench_pool', {wait})"
        if not await connection.scalar(text(lock.format(wait=0))):
            print("  waiting for another run to give MariaDB's buffer pool back", file=sys.stderr)
            if not await connection.scalar(text(lock.format(wait=POOL_LOCK_WAIT))):
                raise Unavailable("another benchmark run holds MariaDB's buffer pool")
        before = int(await connection.scalar(query))

        async def resize(size: int) -> None:
            await connection.exec_driver_sql(f"SET GLOBAL innodb_buffer_pool_size = {size}")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and size != before:
                if int(await connection.scalar(query)) != before:
                    break
                await asyncio.sleep(0.5)

        print(f"  innodb_buffer_pool_size: {megabytes} MB for the run", file=sys.stderr)
        await resize(megabytes * 1024 * 1024)
        try:
            yield
        finally:
            await connection.exec_driver_sql(f"SET GLOBAL innodb_buffer_pool_size = {before}")
            await connection.scalar(text("SELECT RELEASE_LOCK('agentsession_bench_pool')"))
            print(f"  innodb_buffer_pool_size: back to {before // 1048576} MB", file=sys.stderr)
