"""Newest-first history: an agent's context window, then older pages, on every backend.

``list_tasks(..., newest_first=True)`` (and ``GET .../chat-tasks?order=newest``) is the
exact reverse of the oldest-first order, ``(created_time desc, id desc)``, so a cursor
from either order continues correctly in both directions: no repeats and no gaps, also
while turns are added between pages, and with many turns saved in the same
millisecond.
"""

from __future__ import annotations

import secrets

import pytest

from agentsession import SessionMiddleware, SessionService, sessions_router
from agentsession.service import encode_cursor, now_ms
from agentsession.stores.base import TaskRecord
from tests.apps import SECRET, client_for
from tests.conftest import new_user

pytestmark = pytest.mark.anyio


async def conversation_with_turns(
    service: SessionService, user: str, turns: int, *, same_time: bool = False
) -> tuple[str, list[TaskRecord]]:
    """A conversation with ``turns`` tasks, oldest first; all in one millisecond, or
    one millisecond apart (saved through the store so that times are exact)."""
    session = await service.create_session(user)
    start = now_ms() - 10 * turns
    saved = []
    for number in range(turns):
        created = start if same_time else start + number
        record = TaskRecord(
            id=f"t{secrets.token_hex(3)}-{number:03d}",
            session_id=session.id,
            user_id=user,
            user_message=f"message {number}",
            message_bubbles=[{"text": f"reply {number}"}],
            task_metadata=None,
            created_time=created,
            updated_time=created,
        )
        stored = await service.store.save_task(record)
        assert stored is not None
        saved.append(stored)
    saved.sort(key=lambda task: task.sort_key)
    return session.id, saved


def ids(tasks: list[TaskRecord]) -> list[str]:
    return [task.id for task in tasks]


async def test_the_latest_turns_first(service: SessionService, user: str) -> None:
    session_id, turns = await conversation_with_turns(service, user, 60)
    page = await service.list_tasks(user, session_id, limit=20, newest_first=True)
    assert ids(page.items) == ids(turns[-20:][::-1])
    assert page.next_cursor is not None
    oldest = await service.list_tasks(user, session_id, limit=20)
    assert ids(oldest.items) == ids(turns[:20])  # the default is unchanged


@pytest.mark.parametrize("same_time", [False, True], ids=["ms-apart", "same-ms"])
async def test_paging_back_has_no_repeats_and_no_gaps(
    service: SessionService, user: str, same_time: bool
) -> None:
    """Page backward 7 at a time while new turns arrive between pages: every turn there
    at the start is seen exactly once, in order; the new ones are not in older pages."""
    session_id, turns = await conversation_with_turns(service, user, 45, same_time=same_time)
    seen: list[TaskRecord] = []
    cursor = None
    added = 0
    while True:
        page = await service.list_tasks(user, session_id, limit=7, cursor=cursor, newest_first=True)
        seen.extend(page.items)
        await service.save_task(user, session_id, f"late-{added}", message_bubbles=[])
        added += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert ids(seen) == ids(turns[::-1])
    assert len(set(ids(seen))) == len(seen)


@pytest.mark.parametrize("same_time", [False, True], ids=["ms-apart", "same-ms"])
async def test_a_cursor_works_in_both_directions(
    service: SessionService, user: str, same_time: bool
) -> None:
    """From any turn, newest first gives the ones before it and oldest first the ones
    after it: together with it, the whole conversation, nothing twice."""
    session_id, turns = await conversation_with_turns(service, user, 30, same_time=same_time)
    for middle in (0, 13, 29):
        cursor = encode_cursor(turns[middle].sort_key)
        before = await service.list_tasks(
            user, session_id, limit=100, cursor=cursor, newest_first=True
        )
        after = await service.list_tasks(user, session_id, limit=100, cursor=cursor)
        assert ids(before.items) == ids(turns[:middle][::-1])
        assert ids(after.items) == ids(turns[middle + 1 :])


async def test_newest_first_of_a_missing_or_foreign_conversation(
    service: SessionService, user: str
) -> None:
    from agentsession import SessionNotFound

    session_id, _ = await conversation_with_turns(service, user, 3)
    with pytest.raises(SessionNotFound):
        await service.list_tasks(new_user(), session_id, newest_first=True)
    with pytest.raises(SessionNotFound):
        await service.list_tasks(user, "no-such-conversation", newest_first=True)
    empty = await service.create_session(user)
    page = await service.list_tasks(user, empty.id, newest_first=True)
    assert (page.items, page.next_cursor) == ([], None)


async def test_over_http(service: SessionService) -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(sessions_router(), prefix="/api")
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    async with client_for(app) as http:
        created = await http.post("/api/sessions", json={})
        session_id = created.json()["id"]
        for number in range(5):
            body = {"taskId": f"h{number}", "messageBubbles": [{"text": str(number)}]}
            saved = await http.post(f"/api/sessions/{session_id}/chat-tasks", json=body)
            assert saved.status_code == 200, saved.text
        url = f"/api/sessions/{session_id}/chat-tasks"
        latest = (await http.get(url, params={"order": "newest", "limit": 2})).json()
        assert [task["taskId"] for task in latest["data"]] == ["h4", "h3"]
        older = await http.get(
            url, params={"order": "newest", "limit": 2, "cursor": latest["meta"]["nextCursor"]}
        )
        assert [task["taskId"] for task in older.json()["data"]] == ["h2", "h1"]
        oldest = (await http.get(url, params={"order": "oldest", "limit": 2})).json()
        assert [task["taskId"] for task in oldest["data"]] == ["h0", "h1"]
        bad = await http.get(url, params={"order": "latest"})
    assert bad.status_code == 422
    assert bad.json() == {
        "error": {
            "code": "invalid_input",
            "message": "order: must be oldest or newest, not 'latest'",
            "field": "order",
        }
    }


async def test_newest_first_must_be_a_bool(service: SessionService, user: str) -> None:
    from agentsession import InvalidInput

    session_id, _ = await conversation_with_turns(service, user, 1)
    with pytest.raises(InvalidInput, match="newest_first"):
        await service.list_tasks(user, session_id, newest_first="yes")  # type: ignore[arg-type]
