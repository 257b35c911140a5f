"""One statement and one network round trip per hot call, on PostgreSQL and MariaDB.

The hot calls are what every chat request makes: reading a conversation, its latest
turns or its history, the user's conversations (all, or the pinned ones), its state;
saving a task; writing the state; a search, first page or later. Each is counted
twice: the statements SQLAlchemy executes (a ``before_cursor_execute`` listener) and
the writes to the database's socket (a counter on asyncio's socket transport: each is
a request the client then waits for). No pre-ping, no BEGIN/COMMIT of its own.
Saving a task on MariaDB is one transaction (BEGIN, the conversation's touch, the
upsert, COMMIT) sent as one request: one round trip.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from agentsession.service import SessionService
from tests.databases import fresh_database, sql_service, store_of

pytestmark = pytest.mark.anyio


class Wire:
    """Counts writes to any asyncio socket transport while ``counting``."""

    def __init__(self) -> None:
        self.writes = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        from asyncio import selector_events

        transport: Any = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
        write, writelines = transport.write, transport.writelines
        wire = self

        def counting_write(self: Any, data: Any) -> None:
            wire.writes += 1
            write(self, data)

        def counting_writelines(self: Any, lines: Any) -> None:
            wire.writes += 1
            writelines(self, [b"".join(lines)])

        transport.write, transport.writelines = counting_write, counting_writelines
        try:
            yield
        finally:
            transport.write, transport.writelines = write, writelines


@contextlib.asynccontextmanager
async def warm_service(backend: str, tmp_path: Path) -> AsyncIterator[SessionService]:
    async with fresh_database(backend, tmp_path) as url:
        service = sql_service(url)
        try:
            await service.start()
            yield service
        finally:
            await service.close()


@pytest.fixture(params=["postgresql", "mysql"])
def server_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_one_statement_and_one_round_trip_per_hot_call(
    server_backend: str, tmp_path: Path
) -> None:
    async with warm_service(server_backend, tmp_path) as service:
        user = "counted-user"
        conversation = await service.create_session(user)
        sid = conversation.id
        for number in range(30):
            await service.save_task(
                user,
                sid,
                f"t{number}",
                user_message=f"note {number}",
                message_bubbles=[{"n": number}],
            )
        state = await service.state(user, sid)
        await state.set("seen", 1)
        first = await service.list_tasks(user, sid, limit=10)
        latest = await service.list_tasks(user, sid, limit=10, newest_first=True)
        found = await service.search(user, "note", limit=10)
        assert first.next_cursor
        assert latest.next_cursor
        assert found.next_cursor
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "get_session": lambda: service.get_session(user, sid),
            "list_sessions": lambda: service.list_sessions(user, limit=20),
            "list_sessions (pinned)": lambda: service.list_sessions(user, limit=20, pinned=True),
            "search": lambda: service.search(user, "note", limit=10),
            "search, page 2": lambda: service.search(
                user, "note", limit=10, cursor=found.next_cursor
            ),
            "list_tasks": lambda: service.list_tasks(user, sid, limit=20),
            "list_tasks, page 2": lambda: service.list_tasks(
                user, sid, limit=10, cursor=first.next_cursor
            ),
            "latest turns": lambda: service.list_tasks(user, sid, limit=20, newest_first=True),
            "older turns": lambda: service.list_tasks(
                user, sid, limit=10, cursor=latest.next_cursor, newest_first=True
            ),
            "state read": lambda: service.state(user, sid),
            "state write": lambda: state.set("seen", 2),
            "save_task (viewed)": lambda: service.save_task(
                user, sid, "t-new", message_bubbles=[], viewed=True
            ),
            "save_task (again)": lambda: service.save_task(
                user, sid, "t-new", message_bubbles=[{"x": 1}]
            ),
        }
        engine = store_of(service).engine.sync_engine
        wire = Wire()
        for name, call in calls.items():
            await call()  # warm: asyncpg prepares a statement on its first use
            seen: list[str] = []

            def record(*args: Any, seen: list[str] = seen) -> None:
                seen.append(args[2])

            event.listen(engine, "before_cursor_execute", record)
            before = wire.writes
            try:
                with wire.counting():
                    await call()
            finally:
                event.remove(engine, "before_cursor_execute", record)
            trips = wire.writes - before
            assert len(seen) == 1, (name, seen)
            assert trips == 1, (name, trips, seen)


async def test_a_request_after_a_database_restart_needs_no_ping(tmp_path: Path) -> None:
    """The engine sends no ``SELECT 1`` before a statement; a pooled connection the
    server closed is replaced at checkout (``tests/test_engine.py``), and an outage
    itself is the fault suite's."""
    async with warm_service("postgresql", tmp_path) as service:
        store = store_of(service)
        assert store.engine.sync_engine.pool._pre_ping is False
