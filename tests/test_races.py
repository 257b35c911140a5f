"""A delete racing the writes of its conversation: every answer a clear one, no orphans.

The UI race the hardening issue names: one tab deletes a conversation while the agent
saves its reply and the user rates earlier ones. Each write either lands before the
delete (and goes with it) or answers 404; none answers 5xx, and no task or rating is
left without its conversation or task, on every backend.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from agentsession import SessionService
from agentsession.stores.dynamodb import DynamoDBStore
from agentsession.stores.memory import MemoryStore
from agentsession.stores.redis import RedisStore
from agentsession.stores.sql import SqlStore
from tests.apps import client_for
from tests.databases import dynamodb_dump
from tests.test_api import PREFIX, fastapi_app

pytestmark = pytest.mark.anyio

ROUNDS = 20
WRITES = 20

_ORPHANS = {
    "tasks without their conversation": (
        "SELECT COUNT(*) FROM chat_tasks t WHERE NOT EXISTS "
        "(SELECT 1 FROM sessions s WHERE s.id = t.session_id)"
    ),
    "ratings without their task": (
        "SELECT COUNT(*) FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM chat_tasks t "
        "WHERE t.id = f.task_id AND t.user_id = f.user_id AND t.session_id = f.session_id)"
    ),
    "ratings without their conversation": (
        "SELECT COUNT(*) FROM feedback f WHERE NOT EXISTS "
        "(SELECT 1 FROM sessions s WHERE s.id = f.session_id)"
    ),
}


async def rows_of(service: SessionService, session_id: str) -> dict[str, int]:
    """The rows left anywhere for ``session_id``, and the orphans of the whole store."""
    store = service.store
    if isinstance(store, MemoryStore):
        conversation = store._conversations.get(session_id)
        homes = [home for home in store._task_home.values() if home == session_id]
        kept = set(store._conversations)
        return {
            "conversation": int(conversation is not None),
            "task homes": len(homes),
            "task homes without their conversation": sum(
                home not in kept for home in store._task_home.values()
            ),
        }
    if isinstance(store, DynamoDBStore):
        dump = await dynamodb_dump(service)
        return {
            "conversation": int(session_id in dump["sessions"]),
            "task homes": sum(home == session_id for home in dump["chat_tasks"].values()),
            "feedback": sum(home == session_id for home in dump["feedback"].values()),
            "inconsistencies": len(dump["problems"]),
        }
    if isinstance(store, RedisStore):
        dump = await store._dump()
        return {
            "conversation": int(session_id in dump["sessions"]),
            "task homes": sum(home == session_id for home in dump["task_homes"].values()),
            "feedback": sum(item.session_id == session_id for item in dump["feedback"].values()),
            "inconsistencies": len(dump["problems"]),
        }
    assert isinstance(store, SqlStore)
    found: dict[str, int] = {}
    async with store.engine.connect() as connection:
        for table in ("sessions", "chat_tasks", "feedback"):
            column = "id" if table == "sessions" else "session_id"
            query = text(f"SELECT COUNT(*) FROM {table} WHERE {column} = :id")
            found[table] = int(await connection.scalar(query, {"id": session_id}) or 0)
        for name, query_text in _ORPHANS.items():
            found[name] = int(await connection.scalar(text(query_text)) or 0)
    return found


async def test_delete_racing_task_saves_and_ratings(service: SessionService) -> None:
    user = f"racer-{secrets.token_hex(4)}"
    app = fastapi_app(service)
    headers = {"X-User": user}
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        client.headers.update(headers)
        statuses: dict[str, set[int]] = {"save": set(), "rate": set(), "delete": set()}
        for round_ in range(ROUNDS):
            created = await client.post("/sessions", json={"name": f"round {round_}"})
            assert created.status_code == 201, created.text
            conversation = created.json()["id"]
            rated = [f"rated-{index}" for index in range(WRITES)]
            for task_id in rated:
                task = {"taskId": task_id, "messageBubbles": ["earlier"]}
                saved = await client.post(f"/sessions/{conversation}/chat-tasks", json=task)
                assert saved.status_code == 200, saved.text

            async def save(index: int, conversation: str = conversation) -> httpx.Response:
                task = {"taskId": f"new-{index}", "messageBubbles": [{"reply": index}]}
                return await client.post(f"/sessions/{conversation}/chat-tasks", json=task)

            async def rate(task_id: str, conversation: str = conversation) -> httpx.Response:
                rating = {"taskId": task_id, "sessionId": conversation, "feedbackType": "up"}
                return await client.post("/feedback", json=rating)

            async def delete(conversation: str = conversation) -> httpx.Response:
                return await client.delete(f"/sessions/{conversation}")

            calls: list[tuple[str, Any]] = [("save", save(index)) for index in range(WRITES)]
            calls += [("rate", rate(task_id)) for task_id in rated]
            # The delete starts at a different point of the burst each round.
            calls.insert(round_ * 2 % len(calls), ("delete", delete()))
            responses = await asyncio.gather(*(call for _, call in calls))

            for (kind, _), response in zip(calls, responses, strict=True):
                statuses[kind].add(response.status_code)
                assert response.status_code < 500, (kind, response.status_code, response.text)
                allowed = {"save": {200, 404}, "rate": {201, 404}, "delete": {204}}[kind]
                assert response.status_code in allowed, (kind, response.text)
                if response.status_code == 404:
                    assert response.json()["error"]["code"] == "not_found"
            left = await rows_of(service, conversation)
            assert set(left.values()) == {0}, (round_, left)
            # And the conversation answers as gone.
            gone = await client.get(f"/sessions/{conversation}/chat-tasks")
            assert gone.status_code == 404
        # Over the rounds both outcomes happened: the race was really run.
        assert statuses["delete"] == {204}
        assert 404 in statuses["save"] | statuses["rate"], statuses
