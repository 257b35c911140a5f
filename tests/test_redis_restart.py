"""Redis keeps what the service acknowledged across a restart of the server.

Each test runs a ``redis-server`` of its own (``tests.faults.RedisServer``: a spare port,
its own directory, ``appendonly yes``, ``appendfsync always``, no RDB snapshots), so
what comes back after a restart is what the append-only file replays.

* A clean restart (SIGTERM, started again on the same directory): conversations
  (renamed, viewed, with a TTL), chat tasks (saved once and saved again), feedback
  (given and replaced), state in two namespaces, a deleted conversation, written
  through ``SessionService`` and through the HTTP API, read back exactly, by the
  service that wrote them (its connections reconnect) and by a new one.
* A crash (SIGKILL under a concurrent write load): every write the service
  acknowledged is there afterwards, and every write it did not is all there or not at
  all.

Without ``redis-server`` these skip locally and fail in CI (``CI`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import HTTPConnection

from agentsession import SessionMiddleware, SessionService, sessions_router
from agentsession.common import now_ms
from agentsession.config import ServiceConfig
from agentsession.errors import StoreUnavailable
from agentsession.stores.base import FeedbackRecord, SessionRecord, TaskRecord
from tests.apps import SECRET, client_for
from tests.faults import RedisServer, require

pytestmark = pytest.mark.anyio

API = "/api/v1"
#: The service's per-call timeout (seconds) in these tests.
TIMEOUT = 3.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, running; killed and its directory removed."""
    available, reason = RedisServer.available()
    require(available, reason)
    RedisServer.drop_stale()
    server = RedisServer.make(appendfsync="always")
    try:
        server.start()
        yield server
    finally:
        server.remove()


def make_service(server: RedisServer, prefix: str, *, ttl: int | None = None) -> SessionService:
    """A service on ``server`` as a user's config makes it (keys ``<prefix>agentsession:``)."""
    service = SessionService.from_config(
        ServiceConfig(type="redis", database_url=server.url, table_prefix=prefix, ttl=ttl)
    )
    service.timeout = TIMEOUT
    return service


@pytest.fixture
async def opened() -> AsyncIterator[list[SessionService]]:
    """Services the test opens, closed when it ends (also on failure)."""
    services: list[SessionService] = []
    yield services
    for service in services:
        with contextlib.suppress(Exception):  # a service of a server that is gone
            await service.close()


async def restart(server: RedisServer, mode: str) -> None:
    await asyncio.to_thread(server.stop, mode)
    await asyncio.to_thread(server.start)


# Everything a user can read, as plain values


async def everything(service: SessionService, user: str) -> dict[str, Any]:
    """Every conversation of ``user`` with its record, tasks, state and version, and every
    feedback of theirs: what a restart must keep exactly."""
    conversations: list[SessionRecord] = []
    cursor: str | None = None
    while True:
        page = await service.list_sessions(user, limit=2, cursor=cursor)
        conversations += page.items
        if (cursor := page.next_cursor) is None:
            break
    found: dict[str, Any] = {"conversations": conversations}
    for conversation in conversations:
        assert await service.get_session(user, conversation.id) == conversation
        tasks: list[TaskRecord] = []
        cursor = None
        while True:
            tasks_page = await service.list_tasks(user, conversation.id, limit=2, cursor=cursor)
            tasks += tasks_page.items
            if (cursor := tasks_page.next_cursor) is None:
                break
        loaded = await service.store.load_state(user, conversation.id, now_ms())
        assert loaded is not None
        found[conversation.id] = {"tasks": tasks, "state": (json.loads(loaded[0]), loaded[1])}
    feedback: list[FeedbackRecord] = []
    cursor = None
    while True:
        feedback_page = await service.list_feedback(user, limit=2, cursor=cursor)
        feedback += feedback_page.items
        if (cursor := feedback_page.next_cursor) is None:
            break
    found["feedback"] = feedback
    return found


# The HTTP API, in process, over the same service


def header_user(request: HTTPConnection) -> str | None:
    return request.headers.get("x-user")


def api_app(service: SessionService) -> FastAPI:
    app = FastAPI()
    app.include_router(sessions_router(user_resolver=header_user), prefix=API)
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    return app


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def api_view(client: httpx.AsyncClient) -> dict[str, Any]:
    """What the API shows the client's user: conversations, their tasks, feedback."""
    listed = (await ok(await client.get("/sessions", params={"limit": "100"})))["data"]
    view: dict[str, Any] = {"sessions": listed, "feedback": []}
    for item in listed:
        path = f"/sessions/{item['id']}/chat-tasks"
        view[item["id"]] = (await ok(await client.get(path, params={"limit": "100"})))["data"]
    view["feedback"] = (await ok(await client.get("/feedback", params={"limit": "100"})))["data"]
    return view


async def test_a_clean_restart_keeps_everything_exactly(
    redis_server: RedisServer, opened: list[SessionService]
) -> None:
    prefix = f"rs_{secrets.token_hex(3)}_"
    service = make_service(redis_server, prefix, ttl=3600)
    opened.append(service)
    await service.start()
    alice, bob = f"alice-{secrets.token_hex(3)}", f"bob-{secrets.token_hex(3)}"

    # Through the service
    trip = await service.create_session(alice, name="Trip", agent_id="agent-a", client_id="web")
    notes = await service.create_session(alice)
    doomed = await service.create_session(alice, name="To delete")
    bobs = await service.create_session(bob, name="Bob's")
    bubbles = [{"type": "text", "text": "Lyon: 3 days, ünïcödé ✓"}, {"tool": {"n": [1, 2.5]}}]
    await service.save_task(alice, trip.id, "t1", user_message="Plan a trip", message_bubbles=[])
    await service.save_task(
        alice,
        trip.id,
        "t1",
        user_message="Plan a trip",
        message_bubbles=bubbles,
        task_metadata={"final": True, "tokens": 1234},
    )
    await service.save_task(alice, trip.id, "t2", user_message=None, viewed=True)
    await service.save_task(alice, notes.id, "t3", user_message="x" * 20_000)
    await service.save_task(alice, doomed.id, "t4", user_message="gone soon")
    await service.save_task(bob, bobs.id, "t1", user_message="the same task id, Bob's own")
    await service.add_feedback(alice, trip.id, "t1", "up", "great")
    await service.add_feedback(alice, trip.id, "t1", "down", "changed my mind")
    await service.add_feedback(alice, trip.id, "t2", "up")
    await service.add_feedback(alice, doomed.id, "t4", "up")
    await service.add_feedback(bob, bobs.id, "t1", "down")
    state = await service.state(alice, trip.id)
    await state.update({"city": "Lyon", "days": 3, "nested": {"a": [None, True]}})
    await state.delete("days")
    await (await service.state(alice, trip.id, "ui")).set("theme", "dark")
    await service.rename_session(alice, notes.id, "Notes")
    await service.mark_viewed(alice, trip.id)
    await service.delete_session(alice, doomed.id)

    # Through the HTTP API
    carol = f"carol-{secrets.token_hex(3)}"
    app = api_app(service)
    async with client_for(app, base_url=f"http://testserver{API}") as client:
        client.headers["X-User"] = carol
        created = await ok(await client.post("/sessions", json={"name": "Over HTTP"}), 201)
        for version in (1, 2):
            body = {
                "taskId": "h1",
                "userMessage": "hello",
                "messageBubbles": [{"text": f"v{version}"}] * version,
                "taskMetadata": {"version": version},
            }
            await ok(await client.post(f"/sessions/{created['id']}/chat-tasks", json=body))
        rating = {"taskId": "h1", "sessionId": created["id"], "feedbackType": "up"}
        await ok(await client.post("/feedback", json=rating), 201)
        api_before = await api_view(client)

    before = {user: await everything(service, user) for user in (alice, bob)}
    assert {c.id for c in before[alice]["conversations"]} == {trip.id, notes.id}
    assert doomed.id not in before[alice]
    assert len(before[alice]["feedback"]) == 2

    await asyncio.to_thread(redis_server.stop, "TERM")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await service.get_session(alice, trip.id)
    assert time.monotonic() - started < TIMEOUT + 1
    await asyncio.to_thread(redis_server.start)

    # The service that wrote it all reconnects and reads it back exactly...
    assert {user: await everything(service, user) for user in (alice, bob)} == before
    async with client_for(app, base_url=f"http://testserver{API}") as client:
        client.headers["X-User"] = carol
        assert await api_view(client) == api_before
    # ... and so does a new one, as after a restart of the app.
    fresh = make_service(redis_server, prefix, ttl=3600)
    opened.append(fresh)
    await fresh.start()
    assert {user: await everything(fresh, user) for user in (alice, bob)} == before
    async with client_for(api_app(fresh), base_url=f"http://testserver{API}") as client:
        client.headers["X-User"] = carol
        assert await api_view(client) == api_before

    # And it goes on writing, and a second restart keeps that too.
    saved = await fresh.save_task(alice, trip.id, "t5", user_message="after the restart")
    await restart(redis_server, "TERM")
    page = await fresh.list_tasks(alice, trip.id)
    assert [task.id for task in page.items] == ["t1", "t2", "t5"]
    assert page.items[-1] == saved


# A crash under load


@dataclass
class Written:
    """What a writer sent and what the service acknowledged."""

    conversations: dict[str, str] = field(default_factory=dict)  # id -> name, acknowledged
    sent_names: set[str] = field(default_factory=set)
    tasks: dict[tuple[str, str], int] = field(default_factory=dict)  # acknowledged version
    tasks_sent: dict[tuple[str, str], int] = field(default_factory=dict)
    feedback: dict[tuple[str, str], str] = field(default_factory=dict)  # acknowledged rating
    state: dict[str, int] = field(default_factory=dict)  # acknowledged counter
    state_sent: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def task_payload(task_id: str, version: int) -> dict[str, Any]:
    return {
        "user_message": f"question {task_id}",
        "message_bubbles": [{"text": f"{task_id} v{version} #{i}"} for i in range(version + 1)],
        "task_metadata": {"version": version},
    }


async def writer(service: SessionService, user: str, written: Written, stop: asyncio.Event) -> None:
    """Write until the first failure (the server went away), recording acknowledgements."""
    k = 0
    try:
        while not stop.is_set():
            k += 1
            name = f"{user}-c{k}"
            written.sent_names.add(name)
            conversation = await service.create_session(user, name=name)
            written.conversations[conversation.id] = name
            for i in range(3):
                task_id = f"{name}-t{i}"
                for version in (1, 2):
                    written.tasks_sent[(conversation.id, task_id)] = version
                    await service.save_task(
                        user, conversation.id, task_id, **task_payload(task_id, version)
                    )
                    written.tasks[(conversation.id, task_id)] = version
                rating = "up" if i % 2 else "down"
                await service.add_feedback(user, conversation.id, task_id, rating)
                written.feedback[(conversation.id, task_id)] = rating
                written.state_sent[conversation.id] = i + 1
                await (await service.state(user, conversation.id)).set("turns", i + 1)
                written.state[conversation.id] = i + 1
    except StoreUnavailable:
        return
    except Exception as error:  # reported, not raised, so that every writer stops
        written.errors.append(f"{user}: {type(error).__name__}: {error}")


async def check_written(service: SessionService, user: str, written: Written) -> list[str]:
    """Every acknowledged write present as acknowledged (or as sent later), whole."""
    problems: list[str] = []
    everything_now = await everything(service, user)
    stored = {c.id: c for c in everything_now["conversations"]}
    for conversation_id, name in written.conversations.items():
        if conversation_id not in stored:
            problems.append(f"acknowledged conversation {name} is missing")
        elif stored[conversation_id].name != name:
            problems.append(f"conversation {name} is named {stored[conversation_id].name!r}")
    for conversation_id, record in stored.items():
        if record.name not in written.sent_names:
            problems.append(f"conversation {record.name!r} was never sent")
        tasks = {task.id: task for task in everything_now[conversation_id]["tasks"]}
        for task_id, task in tasks.items():
            sent = written.tasks_sent.get((conversation_id, task_id), 0)
            acked = written.tasks.get((conversation_id, task_id), 0)
            version = task.task_metadata.get("version") if task.task_metadata else None
            if not isinstance(version, int) or version not in range(max(acked, 1), sent + 1):
                problems.append(f"task {task_id}: version {version}, acked {acked}, sent {sent}")
            elif {
                "user_message": task.user_message,
                "message_bubbles": task.message_bubbles,
                "task_metadata": task.task_metadata,
            } != task_payload(task_id, version):
                problems.append(f"task {task_id} v{version} is not what was sent")
        state, _version = everything_now[conversation_id]["state"]
        turns = state.get("default", {}).get("turns", 0)
        low = written.state.get(conversation_id, 0)
        high = written.state_sent.get(conversation_id, 0)
        if not low <= turns <= high:
            problems.append(f"state of {record.name}: turns {turns}, acked {low}, sent {high}")
    for (conversation_id, task_id), version in written.tasks.items():
        if conversation_id in stored and task_id not in {
            task.id for task in everything_now[conversation_id]["tasks"]
        }:
            problems.append(f"acknowledged task {task_id} (v{version}) is missing")
    ratings = {(f.session_id, f.task_id): f.rating for f in everything_now["feedback"]}
    for key, rating in written.feedback.items():
        if ratings.get(key) != rating:
            problems.append(f"acknowledged feedback {key[1]} {rating}: stored {ratings.get(key)}")
    return problems


async def test_nothing_acknowledged_is_lost_to_a_sigkill(
    redis_server: RedisServer, opened: list[SessionService]
) -> None:
    prefix = f"rk_{secrets.token_hex(3)}_"
    service = make_service(redis_server, prefix)
    opened.append(service)
    await service.start()
    users = [f"crash-{secrets.token_hex(3)}-w{n}" for n in range(8)]
    written = {user: Written() for user in users}
    stop = asyncio.Event()
    writers = [asyncio.create_task(writer(service, u, written[u], stop)) for u in users]
    await asyncio.sleep(1.0)
    in_flight = sum(not task.done() for task in writers)
    await asyncio.to_thread(redis_server.stop, "KILL")  # mid-write: no clean shutdown
    stop.set()
    await asyncio.wait_for(asyncio.gather(*writers), TIMEOUT + 5)
    await asyncio.to_thread(redis_server.start)

    fresh = make_service(redis_server, prefix)
    opened.append(fresh)
    await fresh.start()
    problems = [error for user in users for error in written[user].errors]
    for user in users:
        problems += [f"{user}: {p}" for p in await check_written(fresh, user, written[user])]
    acknowledged = sum(len(w.tasks) for w in written.values())
    print(  # shown with -rP, or -s
        f"SIGKILL with {in_flight} writers in flight; acknowledged before it: "
        f"{sum(len(w.conversations) for w in written.values())} conversations, "
        f"{acknowledged} tasks, {sum(len(w.feedback) for w in written.values())} feedback, "
        f"{sum(len(w.state) for w in written.values())} states"
    )
    assert not problems, "\n".join(problems[:60])
    assert in_flight == len(users), "a writer stopped before the kill"
    assert acknowledged > 50, f"only {acknowledged} task saves were acknowledged"
