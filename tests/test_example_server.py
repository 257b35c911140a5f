"""``python -m example_app`` over real HTTP: the browser test's flow, and bad bodies.

The flow: the server runs as its own process with ``SESSION_DATABASE_URL`` pointing at
a fresh PostgreSQL database; the client keeps its cookies across a restart of that
process, as a browser does, and the rows are read back from the database itself. On
Redis (``AGENTSESSION_TEST_REDIS_URL``) under a key prefix of the test's own
(``SESSION_TABLE_PREFIX``), a conversation survives a restart of the app the same way.

The bodies: the agent's route refuses a 50 MB body before it is sent (declared), or
while it is still being sent (chunked), without the server ever holding it; and a
body nested 100,000 deep is a 400, as in-process (test_example_app.py) but on uvicorn.
"""

from __future__ import annotations

import http.client
import json
import secrets
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from agentsession.api import DEFAULT_MAX_BODY_SIZE
from tests.databases import fresh_database, server_url
from tests.example_server import ExampleServer

pytestmark = pytest.mark.anyio

API = "/api/v1"
JSON = {"Content-Type": "application/json"}
MB = 1024 * 1024
TOO_LARGE = {
    "error": {
        "code": "body_too_large",
        "message": f"the body is over the {DEFAULT_MAX_BODY_SIZE}-byte limit",
        "field": "body",
    }
}


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def say(client: httpx.AsyncClient, session_id: str, message: str) -> dict[str, Any]:
    task: dict[str, Any] = await ok(
        await client.post(f"/agent/sessions/{session_id}/messages", json={"message": message})
    )
    assert task["messageBubbles"] == [{"text": f"You said: {message}"}]
    return task


async def test_chat_rename_rate_restart_on_postgresql(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url:
        server = ExampleServer(tmp_path, env={"SESSION_DATABASE_URL": url})
        await anyio.to_thread.run_sync(server.start)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as alice:
                assert (await ok(await alice.get(f"{API}/session/current")))["sessionId"] is None
                first = (await ok(await alice.post(f"{API}/sessions", json={}), 201))["id"]
                hello = await say(alice, first, "Hello agent")
                second = (await ok(await alice.post(f"{API}/sessions", json={}), 201))["id"]
                await say(alice, second, "Second thread")
                current = await ok(
                    await alice.put(f"{API}/session/current", json={"sessionId": first})
                )
                assert current["sessionId"] == first
                more = await say(alice, first, "Line one\nline two")
                await ok(
                    await alice.patch(f"{API}/sessions/{first}", json={"name": "Trip to Lyon"})
                )
                for task, rating in ((hello, "up"), (more, "down")):
                    body = {"taskId": task["taskId"], "sessionId": first, "feedbackType": rating}
                    await ok(await alice.post(f"{API}/feedback", json=body), 201)

                await anyio.to_thread.run_sync(server.stop)
                with pytest.raises(httpx.ConnectError):
                    await alice.get(f"{API}/session/current")
                await anyio.to_thread.run_sync(server.start)

                # What a reload asks for: all there, with the same cookie.
                current = await ok(await alice.get(f"{API}/session/current"))
                assert current["sessionId"] == first
                listed = (await ok(await alice.get(f"{API}/sessions")))["data"]
                assert [(item["id"], item["name"]) for item in listed] == [
                    (first, "Trip to Lyon"),
                    (second, None),
                ]
                tasks = (await ok(await alice.get(f"{API}/sessions/{first}/chat-tasks")))["data"]
                assert tasks == [hello, more]
                ratings = (await ok(await alice.get(f"{API}/feedback?sessionId={first}")))["data"]
                assert sorted((item["taskId"], item["feedbackType"]) for item in ratings) == sorted(
                    [(hello["taskId"], "up"), (more["taskId"], "down")]
                )
                await say(alice, first, "Still here after the restart")

                # Another user (no cookie) sees none of it, and cannot reach it.
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as bob:
                    assert (await ok(await bob.get(f"{API}/sessions")))["data"] == []
                    assert (await bob.get(f"{API}/sessions/{first}/chat-tasks")).status_code == 404
                    hijack = await bob.post(
                        f"/agent/sessions/{first}/messages", json={"message": "hijack"}
                    )
                    assert hijack.status_code == 404
        finally:
            await anyio.to_thread.run_sync(server.stop)

        assert not (tmp_path / ".agentsession" / "example.db").exists()
        connection = await asyncpg.connect(url, timeout=10)
        try:
            sessions = await connection.fetch("SELECT id, name FROM sessions ORDER BY name")
            assert [tuple(row) for row in sessions] == [(first, "Trip to Lyon"), (second, None)]
            messages = await connection.fetch(
                "SELECT session_id, user_message FROM chat_tasks ORDER BY created_time"
            )
            assert [tuple(row) for row in messages] == [
                (first, "Hello agent"),
                (second, "Second thread"),
                (first, "Line one\nline two"),
                (first, "Still here after the restart"),
            ]
            feedback = await connection.fetch("SELECT rating FROM feedback ORDER BY rating")
            assert [row["rating"] for row in feedback] == ["down", "up"]
        finally:
            await connection.close()


async def test_a_conversation_survives_a_restart_on_redis(tmp_path: Path) -> None:
    from redis.asyncio import Redis

    url = server_url("AGENTSESSION_TEST_REDIS_URL")
    table_prefix = f"ex_{secrets.token_hex(4)}_"  # keys: <table_prefix>agentsession:...
    keys = f"{table_prefix}agentsession:*"
    redis = Redis.from_url(url)
    server = ExampleServer(
        tmp_path, env={"SESSION_DATABASE_URL": url, "SESSION_TABLE_PREFIX": table_prefix}
    )
    try:
        await anyio.to_thread.run_sync(server.start)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as alice:
            first = (await ok(await alice.post(f"{API}/sessions", json={}), 201))["id"]
            hello = await say(alice, first, "Hello agent")
            await ok(await alice.patch(f"{API}/sessions/{first}", json={"name": "On Redis"}))
            body = {"taskId": hello["taskId"], "sessionId": first, "feedbackType": "up"}
            await ok(await alice.post(f"{API}/feedback", json=body), 201)
            assert [key async for key in redis.scan_iter(match=keys)], "no key under the prefix"

            await anyio.to_thread.run_sync(server.stop)
            await anyio.to_thread.run_sync(server.start)

            current = await ok(await alice.get(f"{API}/session/current"))
            assert current["sessionId"] == first
            listed = (await ok(await alice.get(f"{API}/sessions")))["data"]
            assert [(item["id"], item["name"]) for item in listed] == [(first, "On Redis")]
            tasks = (await ok(await alice.get(f"{API}/sessions/{first}/chat-tasks")))["data"]
            assert tasks == [hello]
            ratings = (await ok(await alice.get(f"{API}/feedback?sessionId={first}")))["data"]
            assert [(item["taskId"], item["feedbackType"]) for item in ratings] == [
                (hello["taskId"], "up")
            ]
            more = await say(alice, first, "Still here after the restart")
            tasks = (await ok(await alice.get(f"{API}/sessions/{first}/chat-tasks")))["data"]
            assert tasks == [hello, more]
        assert not (tmp_path / ".agentsession" / "example.db").exists()
    finally:
        try:
            await anyio.to_thread.run_sync(server.stop)
        finally:
            try:
                found = [key async for key in redis.scan_iter(match=keys, count=1000)]
                for start in range(0, len(found), 500):
                    await redis.unlink(*found[start : start + 500])
            finally:
                await redis.aclose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    """The example app as a newcomer runs it (SQLite in ``tmp_path/.agentsession``)."""
    running = ExampleServer(tmp_path)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def alice(server: ExampleServer) -> Iterator[tuple[httpx.Client, str]]:
    """A client with a conversation of its own: the client and the conversation's id."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(f"{API}/sessions", json={})
        assert response.status_code == 201, response.text
        yield client, response.json()["id"]


def agent(session_id: str) -> str:
    return f"/agent/sessions/{session_id}/messages"


def open_request(
    server: ExampleServer, client: httpx.Client, path: str, headers: dict[str, str]
) -> socket.socket:
    """A connection to ``server`` on which a POST's head (with the cookie) is sent, no body."""
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Cookie: {cookie}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return connection


def answer(connection: socket.socket) -> tuple[int, Any]:
    """The status and JSON body of the response waiting on ``connection``."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response.status, json.loads(response.read())


def answered(connection: socket.socket) -> bool:
    """Whether the server has begun its response (without waiting)."""
    return bool(select.select([connection], [], [], 0)[0])


def peak_memory(server: ExampleServer) -> int:
    """The server process's peak resident memory so far (VmHWM), in bytes."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status")
    if not status.exists():
        pytest.skip("no /proc to read the server's memory from")
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_a_50_mb_body_is_refused_before_it_is_sent(
    server: ExampleServer, alice: tuple[httpx.Client, str]
) -> None:
    client, session_id = alice
    path = agent(session_id)
    # Declared in Content-Length: the 413 comes back before one byte of the body is sent.
    started = time.monotonic()
    headers = {**JSON, "Content-Length": str(50 * MB)}
    with open_request(server, client, path, headers) as connection:
        assert answer(connection) == (413, TOO_LARGE)
    assert time.monotonic() - started < 5

    # Chunked, with no length: the 413 comes back while the body is still being sent,
    # as soon as the server has read past the limit (and the socket buffers filled).
    chunk = b" " * (64 * 1024)
    sent = 0
    with open_request(server, client, path, {**JSON, "Transfer-Encoding": "chunked"}) as connection:
        while sent < 50 * MB and not answered(connection):
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        assert answer(connection) == (413, TOO_LARGE)
    assert DEFAULT_MAX_BODY_SIZE < sent < 50 * MB

    # Nothing was stored.
    tasks = client.get(f"{API}/sessions/{session_id}/chat-tasks")
    assert (tasks.status_code, tasks.json()["data"]) == (200, [])


def test_a_50_mb_body_sent_whole_is_never_held_in_memory(
    server: ExampleServer, alice: tuple[httpx.Client, str]
) -> None:
    client, session_id = alice
    path = agent(session_id)
    before = peak_memory(server)
    started = time.monotonic()
    declared = client.post(path, content=b" " * (50 * MB), headers=JSON)
    assert (declared.status_code, declared.json()) == (413, TOO_LARGE)
    streamed = client.post(path, content=(b" " * MB for _ in range(50)), headers=JSON)
    assert (streamed.status_code, streamed.json()) == (413, TOO_LARGE)
    assert time.monotonic() - started < 10
    # uvicorn drains what the client still sends, a chunk at a time, and drops it: the
    # server never holds the 50 MB (reading it whole would add 100 MB: list, then join).
    assert peak_memory(server) - before < 25 * MB


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
    ids=["array", "object"],
)
def test_a_body_nested_100000_deep_is_invalid_json(
    alice: tuple[httpx.Client, str], raw: bytes
) -> None:
    client, session_id = alice
    path = agent(session_id)
    started = time.monotonic()
    response = client.post(path, content=raw, headers=JSON)
    assert time.monotonic() - started < 5
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_json", "body")
    assert error["message"].startswith("the body is not valid JSON: maximum recursion depth")
    response = client.post(path, json={"message": "still answering"})
    assert response.status_code == 200, response.text
