"""The browser test's flow through httpx, against ``python -m example_app`` on PostgreSQL.

The server runs as its own process with ``SESSION_DATABASE_URL`` pointing at a fresh
PostgreSQL database; the client keeps its cookies across a restart of that process, as
a browser does, and the rows are read back from the database itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from tests.databases import fresh_database
from tests.example_server import ExampleServer

pytestmark = pytest.mark.anyio

API = "/api/v1"


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
