"""What one service writes, a brand-new service on the same database reads back.

Only the SQL store survives a restart or is shared between instances, so these run on
SQLite (a file), PostgreSQL and MariaDB, each on an empty database of its own
(``fresh_url``): the first service migrates it, the next ones find it migrated.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from agentsession.service import SessionService
from tests.conftest import new_user
from tests.databases import sql_service
from tests.test_service import (
    RICH_JSON,
    RICH_METADATA,
    assert_json_equal,
    feedback_of,
    pause,
    sessions_of,
    snapshot,
    state_of,
    tasks_of,
)

pytestmark = pytest.mark.anyio

NAMESPACES = ("default", "planner")


async def write_everything(service: SessionService, user: str) -> dict[str, Any]:
    """Two conversations with tasks, feedback and state in two namespaces; what was stored."""
    first = await service.create_session(
        user, name="Première conversation 🚀", agent_id="planner", client_id="browser-1"
    )
    second = await service.create_session(user, session_id=f"fixed-{new_user()}")
    await service.mark_viewed(user, first.id)
    task_one = await service.save_task(
        user,
        first.id,
        f"task-{new_user()}",
        user_message="Plan a trip 🗺",
        message_bubbles=RICH_JSON,
        task_metadata=RICH_METADATA,
    )
    await pause()
    task_two = await service.save_task(
        user, first.id, f"task-{new_user()}", message_bubbles=[{"text": "second"}]
    )
    await service.save_task(user, second.id, f"task-{new_user()}", user_message="hi")
    await service.add_feedback(user, first.id, task_one.id, "up", "très bien 👍")
    await pause()
    await service.add_feedback(user, first.id, task_two.id, "down")
    await (await service.state(user, second.id)).set("only", "second")
    await pause()  # first is written last: it lists first
    default = await service.state(user, first.id)
    await default.update({"memory": {"cities": ["Zürich", "東京"]}, "turns": 2})
    planner = await service.state(user, first.id, "planner")
    await planner.set("plan", [{"step": 1, "done": False}])
    return await snapshot(service, user, NAMESPACES)


async def test_rows_survive_a_restart(fresh_url: str) -> None:
    user = new_user()
    async with sql_service(fresh_url) as first:
        written = await write_everything(first, user)

    async with sql_service(fresh_url) as second:
        assert await snapshot(second, user, NAMESPACES) == written

    [newest, oldest] = written["sessions"]
    assert newest.name == "Première conversation 🚀"
    assert newest.agent_id == "planner"
    assert newest.client_id == "browser-1"
    assert newest.last_viewed_at is not None
    assert oldest.id.startswith("fixed-")
    tasks = written["conversations"][newest.id]["tasks"]
    assert len(tasks) == 2
    assert tasks[0].user_message == "Plan a trip 🗺"
    assert_json_equal(tasks[0].message_bubbles, RICH_JSON)
    assert_json_equal(tasks[0].task_metadata, RICH_METADATA)
    assert [(f.rating, f.comment) for f in written["feedback"]] == [
        ("down", None),
        ("up", "très bien 👍"),
    ]
    assert written["conversations"][newest.id]["state"] == {
        "default": {"memory": {"cities": ["Zürich", "東京"]}, "turns": 2},
        "planner": {"plan": [{"step": 1, "done": False}]},
    }
    assert written["conversations"][oldest.id]["state"] == {
        "default": {"only": "second"},
        "planner": {},
    }


async def test_writes_continue_after_a_restart(fresh_url: str) -> None:
    user = new_user()
    async with sql_service(fresh_url) as first:
        session = await first.create_session(user, name="before")
        task = await first.save_task(user, session.id, "task-1", message_bubbles=["v1"])
        await (await first.state(user, session.id)).set("kept", 1)

    await pause()
    async with sql_service(fresh_url) as second:
        renamed = await second.rename_session(user, session.id, "after")
        updated = await second.save_task(user, session.id, "task-1", message_bubbles=["v2"])
        state = await second.state(user, session.id)
        await state.set("added", 2)

    async with sql_service(fresh_url) as third:
        now = await third.get_session(user, session.id)
        assert now.name == "after"
        assert now.created_time == renamed.created_time == session.created_time
        assert now.updated_time >= renamed.updated_time > session.updated_time
        assert updated.created_time == task.created_time
        assert updated.updated_time > task.updated_time
        assert await tasks_of(third, user, session.id) == [updated]
        assert await state_of(third, user, session.id) == {"kept": 1, "added": 2}


async def test_ttl_expiry_survives_a_restart(fresh_url: str) -> None:
    user = new_user()
    async with sql_service(fresh_url, ttl=3600) as first:
        record = await first.create_session(user)

    assert record.expires_at == record.created_time + 3_600_000
    async with sql_service(fresh_url) as second:
        assert await second.get_session(user, record.id) == record


async def test_rows_read_back_through_the_async_driver_url(
    fresh_url: str, sql_backend: str
) -> None:
    user = new_user()
    async with sql_service(fresh_url) as first:
        written = await write_everything(first, user)

    driver = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "mysql": "aiomysql"}[sql_backend]
    explicit = make_url(fresh_url).set(drivername=f"{sql_backend}+{driver}")
    async with sql_service(explicit.render_as_string(hide_password=False)) as second:
        assert await snapshot(second, user, NAMESPACES) == written


async def test_two_instances_share_rows(fresh_url: str) -> None:
    user = new_user()
    async with sql_service(fresh_url) as one, sql_service(fresh_url) as two:
        session = await one.create_session(user, name="shared")
        assert await two.get_session(user, session.id) == session

        task = await two.save_task(user, session.id, "task-1", message_bubbles=["from two"])
        assert await tasks_of(one, user, session.id) == [task]
        feedback = await one.add_feedback(user, session.id, "task-1", "up")
        assert await feedback_of(two, user) == [feedback]

        # Concurrent writers on both instances: distinct keys all kept, one task row.
        handles = [await (one, two)[i % 2].state(user, session.id) for i in range(20)]
        await asyncio.gather(
            *(handle.set(f"key-{i}", i) for i, handle in enumerate(handles)),
            *(
                (one, two)[i % 2].save_task(user, session.id, "task-2", message_bubbles=[i])
                for i in range(20)
            ),
        )
        expected_state = {f"key-{i}": i for i in range(20)}
        assert await state_of(one, user, session.id) == expected_state
        assert await state_of(two, user, session.id) == expected_state
        tasks = await tasks_of(two, user, session.id)
        assert [t.id for t in tasks] == ["task-1", "task-2"]
        assert tasks[1].message_bubbles[0] in range(20)

        await two.delete_session(user, session.id)
        assert await sessions_of(one, user) == []
