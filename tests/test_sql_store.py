"""The SQL store on real SQLite, PostgreSQL and MariaDB: round trips, outages, limits.

Statement counts come from SQLAlchemy's ``before_cursor_execute`` event: every
statement the store sends to the database passes through it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from agentsession import (
    ConfigError,
    IdConflict,
    SessionMiddleware,
    SessionNotFound,
    SessionService,
    StoreUnavailable,
    get_session_service,
)
from tests.databases import behind_proxy, sql_service, statements, store_of

pytestmark = pytest.mark.anyio
SECRET = "s" * 48


@pytest.fixture
async def service(fresh_url: str) -> AsyncIterator[SessionService]:
    """A started service on an empty database of its own (rows are counted here)."""
    async with sql_service(fresh_url) as svc:
        yield svc


async def test_each_operation_costs_one_statement(service: SessionService) -> None:
    """One statement per call; saving a task (which also touches its conversation) is
    one statement on PostgreSQL, one transaction on SQLite, and on MySQL one request
    holding the whole transaction (``BEGIN; <touch>; <upsert>; COMMIT``)."""
    conversation = await service.create_session("alice", name="first")  # warms the pool
    await service.save_task("alice", conversation.id, "warm", message_bubbles=[])
    counts: dict[str, int] = {}
    dialect = store_of(service).dialect

    async def count(name: str, operation: Any) -> Any:
        with statements(service) as seen:
            result = await operation
        if name.startswith("save_task") and dialect == "mysql":
            assert len(seen) == 1, seen
            (request,) = seen
            assert request.startswith("BEGIN; UPDATE sessions SET "), request
            assert "; INSERT INTO chat_tasks " in request, request
            assert request.endswith("; COMMIT"), request
        if name.startswith("save_task") and dialect == "sqlite":
            begin, touch, upsert, commit = seen
            assert [begin.split()[0], commit] == ["BEGIN", "COMMIT"], seen
            assert [touch.split()[:2], upsert.split()[0]] == [["UPDATE", "sessions"], "INSERT"]
            seen = [upsert]
        counts[name] = len(seen)
        return result

    await count("create_session", service.create_session("alice"))
    await count("get_session", service.get_session("alice", conversation.id))
    await count("list_sessions", service.list_sessions("alice"))
    await count(
        "save_task (insert)",
        service.save_task("alice", conversation.id, "t1", user_message="hi", message_bubbles=[1]),
    )
    saved = await count(
        "save_task (update)",
        service.save_task("alice", conversation.id, "t1", user_message="ho", message_bubbles=[2]),
    )
    await count("list_tasks", service.list_tasks("alice", conversation.id))
    await count("add_feedback", service.add_feedback("alice", conversation.id, "t1", "up"))
    await count("list_feedback", service.list_feedback("alice"))
    state = await count("state (load)", service.state("alice", conversation.id))
    await count("state.set", state.set("k", {"v": 1}))
    await count("delete_session", service.delete_session("alice", conversation.id))
    assert counts == dict.fromkeys(counts, 1), counts
    assert saved.user_message == "ho"


async def test_a_request_that_does_not_use_the_service_runs_no_statement(fresh_url: str) -> None:
    async def untouched(request: Request) -> PlainTextResponse:
        request.session["seen"] = True  # the cookie layer alone
        return PlainTextResponse("ok")

    async def read(request: Request) -> JSONResponse:
        service = get_session_service(request)
        record = await service.get_session("alice", request.path_params["sid"])
        return JSONResponse({"name": record.name})

    app = Starlette(routes=[Route("/", untouched), Route("/s/{sid}", read)])
    service = sql_service(fresh_url)
    middleware_app = SessionMiddleware(app, secret_key=SECRET, service=service)
    await middleware_app.lifecycle.startup()  # what the lifespan startup runs
    try:
        conversation = await service.create_session("alice", name="n")
        transport = httpx.ASGITransport(app=middleware_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get(f"/s/{conversation.id}")  # warm the pool
            await client.get("/")  # a cookie: the next request polls the revocations
            await client.get(f"/s/{conversation.id}")  # ... which are then fresh for 5 s
            with statements(service) as seen:
                response = await client.get("/")
            assert response.status_code == 200
            assert seen == []
            with statements(service) as seen:
                response = await client.get(f"/s/{conversation.id}")
            assert response.json() == {"name": "n"}
            assert len(seen) == 1
    finally:
        await middleware_app.lifecycle.shutdown()


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
async def test_server_down_then_back(backend: str, tmp_path: Path) -> None:
    async with behind_proxy(backend, tmp_path) as (proxy, service):
        conversation = await service.create_session("alice", name="before")

        await proxy.stop()  # the server goes away
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await service.get_session("alice", conversation.id)
        assert time.monotonic() - started < 6
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await service.save_task("alice", conversation.id, "t", message_bubbles=[])
        assert time.monotonic() - started < 6

        await proxy.start()  # and comes back: the same service works again
        assert (await service.get_session("alice", conversation.id)).name == "before"
        await service.save_task("alice", conversation.id, "t", message_bubbles=["x"])
        tasks = await service.list_tasks("alice", conversation.id)
        assert [task.message_bubbles for task in tasks.items] == [["x"]]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
async def test_a_server_that_stops_answering_times_out(backend: str, tmp_path: Path) -> None:
    async with behind_proxy(backend, tmp_path) as (proxy, service):
        service.timeout = 2.0
        conversation = await service.create_session("alice")
        await proxy.hang()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await service.get_session("alice", conversation.id)
        assert time.monotonic() - started < 4
        await proxy.stop()
        await proxy.start()
        assert (await service.get_session("alice", conversation.id)).id == conversation.id


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1:1/x", "mysql://root@127.0.0.1:1/x"],
)
async def test_closed_port_is_store_unavailable(url: str) -> None:
    started = time.monotonic()
    service = sql_service(url)
    with pytest.raises(StoreUnavailable):
        await service.start()
    with pytest.raises(StoreUnavailable):
        await service.get_session("alice", "x")
    await service.close()
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "bad",
    [
        "oracle://scott:tiger-secret@db/x",
        "postgresql://u:tiger-secret@db",
        "not a url",
    ],
)
def test_bad_url_is_a_config_error_without_the_password(bad: str) -> None:
    with pytest.raises(ConfigError) as raised:
        sql_service(bad)
    assert "tiger-secret" not in str(raised.value)
    assert "database_url" in str(raised.value)


async def test_ids_are_case_sensitive(service: SessionService) -> None:
    await service.create_session("alice", session_id="Abc", name="upper")
    await service.create_session("alice", session_id="abc", name="lower")
    assert (await service.get_session("alice", "Abc")).name == "upper"
    assert (await service.get_session("alice", "abc")).name == "lower"
    with pytest.raises(SessionNotFound):
        await service.get_session("ALICE", "abc")
    with pytest.raises(IdConflict):
        await service.create_session("bob", session_id="abc")


async def test_large_json_and_text_round_trip(service: SessionService) -> None:
    conversation = await service.create_session("alice")
    bubbles = [{"type": "text", "text": "é😀" * 50_000}, {"n": [1, 2.5, None, True]}]
    await service.save_task(
        "alice", conversation.id, "big", user_message="x" * 100_000, message_bubbles=bubbles
    )
    (task,) = (await service.list_tasks("alice", conversation.id)).items
    assert task.message_bubbles == bubbles
    assert task.user_message == "x" * 100_000


async def test_deleting_a_conversation_cascades_in_the_database(
    service: SessionService,
) -> None:
    conversation = await service.create_session("alice")
    await service.save_task("alice", conversation.id, "t1", message_bubbles=[])
    await service.add_feedback("alice", conversation.id, "t1", "down", "meh")
    await service.delete_session("alice", conversation.id)
    async with store_of(service).engine.connect() as connection:
        for table in ("sessions", "chat_tasks", "feedback"):
            count = await connection.scalar(text(f"SELECT COUNT(*) FROM {table}"))
            assert count == 0, table


async def test_a_service_used_without_start_starts_itself(fresh_url: str) -> None:
    service = sql_service(fresh_url)
    try:
        conversation = await service.create_session("alice", name="lazy")  # migrates first
        assert (await service.get_session("alice", conversation.id)).name == "lazy"
    finally:
        await service.close()
