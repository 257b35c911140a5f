"""Pinned conversations, the same on every backend: pinning, the listing filter, and
retention, which never deletes a pinned conversation or its tasks by the idle or the
chat-task rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentsession import InvalidInput, SessionNotFound, prune
from agentsession.config import RetentionConfig
from agentsession.service import SessionService, now_ms
from agentsession.stores.base import FeedbackRecord, SessionRecord, TaskRecord
from tests.conftest import new_user
from tests.databases import BACKENDS
from tests.test_retention import contents, opened

pytestmark = pytest.mark.anyio

DAY = 86_400_000


@pytest.fixture(params=BACKENDS)
def any_backend(request: pytest.FixtureRequest) -> str:
    """Each backend, on a store of its own (retention prunes every user's rows)."""
    return str(request.param)


async def ids(service: SessionService, user: str, pinned: bool | None) -> list[str]:
    """Every conversation id that ``list_sessions(pinned=...)`` lists, page by page."""
    out: list[str] = []
    cursor = None
    while True:
        page = await service.list_sessions(user, limit=2, cursor=cursor, pinned=pinned)
        out.extend(record.id for record in page.items)
        if (cursor := page.next_cursor) is None:
            return out


async def test_pinning_keeps_the_order_and_the_filter_lists_each_side(
    service: SessionService, user: str
) -> None:
    made = [(await service.create_session(user, name=f"c{i}")).id for i in range(5)]
    newest_first = await ids(service, user, None)
    assert sorted(newest_first) == sorted(made)

    pinned = await service.pin_session(user, made[1])
    await service.pin_session(user, made[3])

    assert pinned.pinned is True
    before = await service.get_session(user, made[1])
    assert before.pinned is True
    assert (await service.get_session(user, made[0])).pinned is False
    assert await ids(service, user, None) == newest_first  # pinning is not an update
    assert await ids(service, user, True) == [i for i in newest_first if i in (made[1], made[3])]
    assert await ids(service, user, False) == [
        i for i in newest_first if i not in (made[1], made[3])
    ]

    unpinned = await service.pin_session(user, made[3], False)
    assert unpinned.pinned is False
    assert unpinned.updated_time == (await service.get_session(user, made[3])).updated_time
    assert await ids(service, user, True) == [made[1]]
    assert await ids(service, user, False) == [i for i in newest_first if i != made[1]]
    # Another user sees none of it.
    assert await ids(service, new_user(), True) == []


async def test_pinning_a_missing_or_foreign_conversation_is_not_found(
    service: SessionService, user: str
) -> None:
    theirs = await service.create_session(new_user())
    with pytest.raises(SessionNotFound):
        await service.pin_session(user, theirs.id)
    with pytest.raises(SessionNotFound):
        await service.pin_session(user, "no-such-conversation")
    assert (await service.get_session(theirs.user_id, theirs.id)).pinned is False


async def test_pinned_must_be_a_boolean(service: SessionService, user: str) -> None:
    record = await service.create_session(user)
    for value in ("yes", 1, None):
        with pytest.raises(InvalidInput) as caught:
            await service.pin_session(user, record.id, value)  # type: ignore[arg-type]
        assert caught.value.field == "pinned"
    with pytest.raises(InvalidInput) as caught:
        await service.list_sessions(user, pinned="true")  # type: ignore[arg-type]
    assert caught.value.field == "pinned"


async def test_a_pin_is_kept_by_a_rename_and_a_new_task(service: SessionService, user: str) -> None:
    record = await service.create_session(user)
    await service.pin_session(user, record.id)
    await service.rename_session(user, record.id, "renamed")
    await service.save_task(user, record.id, "t1", user_message="hello")
    await service.mark_viewed(user, record.id)
    assert (await service.get_session(user, record.id)).pinned is True


USER = "user-pins"


async def test_retention_deletes_exactly_the_unpinned_old_rows(
    any_backend: str, tmp_path: Path
) -> None:
    now = now_ms()
    old = now - 60 * DAY  # older than every cutoff below
    retention = RetentionConfig(
        task_retention_days=30, feedback_retention_days=0, session_retention_days=30, batch_size=2
    )
    async with opened(any_backend, tmp_path) as service:
        store = service.store
        # Idle conversations (old, no young task), pinned or not.
        for session_id, pinned in (
            ("idle-pinned", True),
            ("idle-plain", False),
            ("busy-pinned", True),  # old itself, with old and young tasks
            ("busy-plain", False),
        ):
            record = SessionRecord(
                session_id, USER, None, None, None, old, old, None, None, pinned=pinned
            )
            await store.insert_session(record)
        tasks = {
            "t-idle-pinned": ("idle-pinned", old),
            "t-idle-plain": ("idle-plain", old),
            "t-old-pinned": ("busy-pinned", old),
            "t-young-pinned": ("busy-pinned", now),
            "t-old-plain": ("busy-plain", old),
            "t-young-plain": ("busy-plain", now),
        }
        for task_id, (session_id, time) in tasks.items():
            saved = await store.save_task(
                TaskRecord(task_id, session_id, USER, "hi", [], None, time, time)
            )
            assert saved is not None, task_id
        for feedback_id, task_id in (("f-pinned", "t-old-pinned"), ("f-plain", "t-old-plain")):
            session_id = tasks[task_id][0]
            rating = FeedbackRecord(feedback_id, session_id, task_id, USER, "up", None, now)
            assert await store.save_feedback(rating, now) is not None
        everything = await contents(service)

        dry = await prune(service, retention=retention, now=now, dry_run=True)
        report = await prune(service, retention=retention, now=now)

        expected = {"chat_tasks": 2, "idle_sessions": 1}  # t-idle-plain, t-old-plain; idle-plain
        assert (dry.chat_tasks, dry.idle_sessions) == (2, 1)
        assert (report.chat_tasks, report.idle_sessions) == (
            expected["chat_tasks"],
            expected["idle_sessions"],
        )
        gone = {"t-idle-plain", "t-old-plain", "f-plain", "idle-plain"}
        assert await contents(service) == {
            table: found - gone for table, found in everything.items()
        }
        # Unpinned, the conversation and its old task go on the next run.
        await service.pin_session(USER, "idle-pinned", False)
        again = await prune(service, retention=retention, now=now)
        assert (again.chat_tasks, again.idle_sessions) == (1, 1)
        assert "idle-pinned" not in (await contents(service))["sessions"]
