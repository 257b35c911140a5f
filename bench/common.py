"""What the benchmarks share: versions, the command line, options, the markdown file,
and creating and dropping server databases."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

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
