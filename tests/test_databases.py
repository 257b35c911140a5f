"""The database servers the store tests use answer.

Without AGENTSESSION_TEST_POSTGRES_URL / AGENTSESSION_TEST_MYSQL_URL these skip
locally; in CI (CI=true) a missing or unreachable server is a failure.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiomysql
import asyncpg
import pytest

from tests.databases import server_url

pytestmark = pytest.mark.anyio


async def test_postgres_answers() -> None:
    url = server_url("AGENTSESSION_TEST_POSTGRES_URL").replace("+asyncpg", "")
    connection = await asyncpg.connect(url, timeout=10)
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()


async def test_mysql_answers() -> None:
    parts = urlsplit(server_url("AGENTSESSION_TEST_MYSQL_URL"))
    connection = await aiomysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        db=parts.path.lstrip("/"),
        connect_timeout=10,
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)
    finally:
        connection.close()
