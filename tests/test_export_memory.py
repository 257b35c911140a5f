"""Exporting a user with 100,000 chat tasks streams: peak memory stays bounded.

The rows are loaded into a fresh SQLite file; a separate Python process then exports
them (to /dev/null) and reports how much its peak RSS grew while it did. Were the
document, or the rows, held in memory, the growth would be well over 100 MiB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from agentsession.service import SessionService
from agentsession.stores.base import SessionRecord, StoredSession, TaskRecord, UserRows
from tests.databases import sql_service

pytestmark = pytest.mark.anyio

TASKS = 100_000
#: The most the export may add to the process's peak RSS.
BOUND_MIB = 40

_EXPORT = """
import asyncio, json, os, sys
from agentsession.service import SessionService
from agentsession.config import ServiceConfig

PAGE = os.sysconf("SC_PAGE_SIZE")

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20

async def main(url, user):
    service = SessionService.from_config(ServiceConfig(type="sql", database_url=url))
    async with service:
        async for _ in service.export_user("warm-up"):
            pass
        before = peak = rss_mib()
        size = 0
        with open("/dev/null", "wb") as sink:
            async for chunk in service.export_user(user):
                size += len(chunk)
                sink.write(chunk)
                peak = max(peak, rss_mib())
        print(json.dumps({"before": before, "after": peak, "bytes": size}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_export_of_100000_tasks_in_bounded_memory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    service: SessionService = sql_service(url)
    async with service:
        record = SessionRecord("big-conversation", "big-user", None, "big", None, 1, 1, None, None)
        bubbles = [{"type": "text", "text": "a reply of some length " * 6}]
        tasks = [
            TaskRecord(f"task-{n:06d}", record.id, "big-user", f"message {n}", bubbles, None, n, n)
            for n in range(TASKS)
        ]
        await service.store.import_rows(
            UserRows("big-user", [StoredSession(record, "{}", 0)], tasks, [])
        )
        del tasks
    result = await anyio.run_process([sys.executable, "-c", _EXPORT, url, "big-user"])
    measured = json.loads(result.stdout)
    growth = measured["after"] - measured["before"]
    size = measured["bytes"] / 2**20
    print(f"export of {TASKS} tasks: {size:.1f} MiB of JSON, peak RSS +{growth:.1f} MiB")
    assert measured["bytes"] > 15 * 2**20
    assert growth < BOUND_MIB
