"""SessionService against every backend: memory, SQLite, PostgreSQL, MariaDB.

Each test runs once per backend through the ``make_service`` fixture. On SQL backends
all tests share one database per backend, so every test works with fresh random user
ids and only ever looks at that user's rows.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pytest

from agentsession import service as service_module
from agentsession.errors import IdConflict, InvalidInput, SessionNotFound
from agentsession.service import MAX_JSON_DEPTH, SessionService, SessionState
from agentsession.stores.base import FeedbackRecord, Page, SessionRecord, TaskRecord
from tests.conftest import MakeService, new_user

pytestmark = pytest.mark.anyio

T = TypeVar("T")

#: JSON with everything that could go wrong in a round trip: nesting, unicode and emoji
#: (4-byte UTF-8), escapes, numbers of each kind, null, empty containers.
RICH_JSON: Any = [
    {"type": "text", "text": "Grüße aus Zürich 🇨🇭🚀 — «ok» 日本語 עברית"},
    {
        "type": "tool",
        "args": {"nested": {"deeper": [1, 2.5, -3, 0, True, False, None]}, "empty": {}},
        "list": [[], [[]], {"a": []}],
        'quote"back\\slash': "line\nbreak\ttab\u2028sep\u0001ctl",
        "clé 🔑": "😀👍🏽👨‍👩‍👧",
    },
    "plain string",
    12345678901234,
    -0.125,
    None,
]
RICH_METADATA: Any = {
    "model": "stand-in",
    "tokens": {"in": 12, "out": 345},
    "tags": ["a", "ü", "🦄"],
    "ratio": 0.5,
    "ok": True,
    "missing": None,
}


# Helpers


def canonical(value: Any) -> str:
    """JSON text that tells 1, 1.0 and True apart (``==`` does not)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def assert_json_equal(actual: Any, expected: Any) -> None:
    assert actual == expected
    assert canonical(actual) == canonical(expected)


async def pages_of(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> list[Page[T]]:
    """Every page of a listing, following ``next_cursor`` until it is None."""
    pages: list[Page[T]] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        assert len(pages) < 10_000, "the cursor never ends"
        cursor = page.next_cursor


async def all_items(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> list[T]:
    return [item for page in await pages_of(fetch) for item in page.items]


def session_order(records: list[SessionRecord]) -> list[SessionRecord]:
    """Conversations as ``list_sessions`` orders them: ``(updated_time desc, id)``."""
    return sorted(records, key=lambda r: (-r.updated_time, r.id))


def task_order(records: list[TaskRecord]) -> list[TaskRecord]:
    """Chat tasks as ``list_tasks`` orders them: ``(created_time, id)``."""
    return sorted(records, key=lambda r: (r.created_time, r.id))


def feedback_order(records: list[FeedbackRecord]) -> list[FeedbackRecord]:
    """Feedback as ``list_feedback`` orders it: ``(created_time desc, id)``."""
    return sorted(records, key=lambda r: (-r.created_time, r.id))


async def sessions_of(service: SessionService, user: str) -> list[SessionRecord]:
    return await all_items(lambda cursor: service.list_sessions(user, limit=7, cursor=cursor))


async def tasks_of(service: SessionService, user: str, session_id: str) -> list[TaskRecord]:
    return await all_items(
        lambda cursor: service.list_tasks(user, session_id, limit=7, cursor=cursor)
    )


async def feedback_of(service: SessionService, user: str, **where: Any) -> list[FeedbackRecord]:
    return await all_items(
        lambda cursor: service.list_feedback(user, limit=7, cursor=cursor, **where)
    )


async def state_of(
    service: SessionService, user: str, session_id: str, namespace: str = "default"
) -> dict[str, Any]:
    handle = await service.state(user, session_id, namespace)
    items = dict(await handle.items())
    assert sorted(await handle.keys()) == sorted(items)
    return items


async def snapshot(
    service: SessionService, user: str, namespaces: tuple[str, ...] = ("default", "agent-b")
) -> dict[str, Any]:
    """Everything ``user`` has, read back through the service, for before/after checks."""
    sessions = await sessions_of(service, user)
    conversations = {}
    for record in sessions:
        conversations[record.id] = {
            "record": await service.get_session(user, record.id),
            "tasks": await tasks_of(service, user, record.id),
            "state": {ns: await state_of(service, user, record.id, ns) for ns in namespaces},
        }
    return {
        "sessions": sessions,
        "conversations": conversations,
        "feedback": await feedback_of(service, user),
    }


def forged_state(service: SessionService, user: str, like: SessionState) -> SessionState:
    """A state handle of ``user`` on ``like``'s conversation, at ``like``'s version.

    ``service.state()`` refuses to make a handle for a conversation the user cannot
    see; this one skips that check, so that a write reaches the store with the current
    version and only the store's own ownership/expiry check can refuse it.
    """
    handle = SessionState(service, user, like.session_id, like.namespace)
    handle._version = like._version
    handle._document = dict(like._document)
    return handle


async def pause() -> None:
    """Long enough for the millisecond clock to move on."""
    await asyncio.sleep(0.003)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Conversation:
    """A user's conversation with one task, its feedback and state in two namespaces."""

    service: SessionService
    user: str
    session: SessionRecord
    task: TaskRecord
    feedback: FeedbackRecord

    @property
    def sid(self) -> str:
        return self.session.id

    @property
    def tid(self) -> str:
        return self.task.id


async def make_conversation(service: SessionService, user: str) -> Conversation:
    session = await service.create_session(user, name="Original name", agent_id="agent-1")
    task = await service.save_task(
        user,
        session.id,
        f"task-{new_user()}",
        user_message="hello 👋",
        message_bubbles=RICH_JSON,
        task_metadata=RICH_METADATA,
    )
    feedback = await service.add_feedback(user, session.id, task.id, "up", "nice")
    state = await service.state(user, session.id)
    await state.update({"a": 1, "nested": {"list": [1, "two", None]}})
    other = await service.state(user, session.id, "agent-b")
    await other.set("x", "y")
    return Conversation(service, user, await service.get_session(user, session.id), task, feedback)


@pytest.fixture
async def conversation(service: SessionService, user: str) -> Conversation:
    return await make_conversation(service, user)


# Conversations


async def test_create_session_defaults(service: SessionService, user: str) -> None:
    before = now_ms()
    record = await service.create_session(user)
    after = now_ms()

    assert isinstance(record.id, str)
    assert len(record.id) >= 32
    assert record.user_id == user
    assert record.name is None
    assert record.agent_id is None
    assert record.client_id is None
    assert before <= record.created_time <= after
    assert record.updated_time == record.created_time
    assert record.last_viewed_at is None
    assert record.expires_at is None
    assert await service.get_session(user, record.id) == record
    assert (await service.list_sessions(user)).items == [record]
    assert (await service.list_sessions(user)).next_cursor is None


async def test_create_session_with_id_name_and_agent(service: SessionService, user: str) -> None:
    session_id = f"conv-{new_user()}"
    record = await service.create_session(
        user, session_id=session_id, name="Trip to Zürich 🚀", agent_id="planner"
    )

    assert record.id == session_id
    assert record.name == "Trip to Zürich 🚀"
    assert record.agent_id == "planner"
    assert await service.get_session(user, session_id) == record
    assert (await service.list_sessions(user)).items == [record]


async def test_create_session_with_client_id(service: SessionService, user: str) -> None:
    record = await service.create_session(user, client_id="browser-1")

    assert record.client_id == "browser-1"
    assert await service.get_session(user, record.id) == record


async def test_create_session_with_a_name_of_255_characters(
    service: SessionService, user: str
) -> None:
    name = "é" * 254 + "🚀"
    record = await service.create_session(user, name=name)

    assert (await service.get_session(user, record.id)).name == name


async def test_create_session_with_a_taken_id_conflicts(service: SessionService, user: str) -> None:
    session_id = f"conv-{new_user()}"
    original = await service.create_session(user, session_id=session_id, name="first")
    other = new_user()

    with pytest.raises(IdConflict) as same_user:
        await service.create_session(user, session_id=session_id, name="second")
    with pytest.raises(IdConflict) as other_user:
        await service.create_session(other, session_id=session_id, name="third")

    for raised in (same_user.value, other_user.value):
        assert raised.field == "session_id"
        assert raised.value == session_id
    assert await service.get_session(user, session_id) == original
    assert await sessions_of(service, user) == [original]
    assert await sessions_of(service, other) == []
    with pytest.raises(SessionNotFound):
        await service.get_session(other, session_id)


async def test_get_session_of_a_missing_id(service: SessionService, user: str) -> None:
    with pytest.raises(SessionNotFound):
        await service.get_session(user, f"missing-{new_user()}")


async def test_session_ids_are_case_sensitive(service: SessionService, user: str) -> None:
    base = f"conv-{new_user()}"
    lower = await service.create_session(user, session_id=base.lower(), name="lower")
    upper = await service.create_session(user, session_id=base.upper(), name="upper")

    assert await service.get_session(user, base.lower()) == lower
    assert await service.get_session(user, base.upper()) == upper


async def test_session_ids_differing_by_trailing_space_are_two_conversations(
    service: SessionService, user: str
) -> None:
    base = f"conv-{new_user()}"
    plain = await service.create_session(user, session_id=base, name="plain")
    spaced = await service.create_session(user, session_id=base + " ", name="spaced")

    assert await service.get_session(user, base) == plain
    assert await service.get_session(user, base + " ") == spaced
    assert {record.id for record in await sessions_of(service, user)} == {base, base + " "}


@pytest.mark.parametrize(
    "alter", [str.upper, lambda owner: owner + " "], ids=["upper-case", "trailing-space"]
)
async def test_users_differing_by_case_or_trailing_space_are_different_users(
    service: SessionService, alter: Callable[[str], str]
) -> None:
    owner = new_user()
    theirs = await make_conversation(service, owner)
    before = await snapshot(service, owner)
    stranger = alter(owner)

    assert await sessions_of(service, stranger) == []
    assert await feedback_of(service, stranger) == []
    with pytest.raises(SessionNotFound):
        await service.get_session(stranger, theirs.sid)
    with pytest.raises(SessionNotFound):
        await service.list_tasks(stranger, theirs.sid)
    with pytest.raises(SessionNotFound):
        await service.rename_session(stranger, theirs.sid, "stolen")
    with pytest.raises(SessionNotFound):
        await service.state(stranger, theirs.sid)
    assert await snapshot(service, owner) == before


@pytest.mark.parametrize(
    "alter", [str.upper, lambda task_id: task_id + " "], ids=["upper-case", "trailing-space"]
)
async def test_task_ids_differing_by_case_or_trailing_space_are_two_tasks(
    service: SessionService, user: str, alter: Callable[[str], str]
) -> None:
    session = await service.create_session(user)
    task_id = f"task-{new_user()}"
    first = await service.save_task(user, session.id, task_id, message_bubbles=["first"])
    await pause()

    second = await service.save_task(user, session.id, alter(task_id), message_bubbles=["second"])

    assert second.id == alter(task_id)
    assert_json_equal(second.message_bubbles, ["second"])
    assert await tasks_of(service, user, session.id) == [first, second]


async def test_list_sessions_newest_first(service: SessionService, user: str) -> None:
    first = await service.create_session(user, name="first")
    await pause()
    second = await service.create_session(user, name="second")
    await pause()
    third = await service.create_session(user, name="third")

    assert (await service.list_sessions(user)).items == [third, second, first]

    await pause()
    renamed = await service.rename_session(user, first.id, "first, renamed")
    assert (await service.list_sessions(user)).items == [renamed, third, second]


async def test_rename_session(service: SessionService, user: str) -> None:
    record = await service.create_session(user, name="old", agent_id="agent-1")
    await pause()
    before = now_ms()

    renamed = await service.rename_session(user, record.id, "New name ✨")

    assert renamed.name == "New name ✨"
    assert renamed.id == record.id
    assert renamed.user_id == user
    assert renamed.agent_id == "agent-1"
    assert renamed.created_time == record.created_time
    assert before <= renamed.updated_time <= now_ms()
    assert renamed.last_viewed_at is None
    assert renamed.expires_at is None
    assert await service.get_session(user, record.id) == renamed


async def test_rename_session_to_none_clears_the_name(service: SessionService, user: str) -> None:
    record = await service.create_session(user, name="named")

    cleared = await service.rename_session(user, record.id, None)

    assert cleared.name is None
    assert (await service.get_session(user, record.id)).name is None
    assert (await service.list_sessions(user)).items == [cleared]


async def test_rename_missing_session(service: SessionService, user: str) -> None:
    with pytest.raises(SessionNotFound):
        await service.rename_session(user, f"missing-{new_user()}", "name")
    assert await sessions_of(service, user) == []


async def test_mark_viewed(service: SessionService, user: str) -> None:
    record = await service.create_session(user, name="chat")
    await pause()
    before = now_ms()

    viewed = await service.mark_viewed(user, record.id)

    assert viewed.last_viewed_at is not None
    assert before <= viewed.last_viewed_at <= now_ms()
    # Viewing is not an update: name, times and order stay as they were.
    assert viewed.name == "chat"
    assert viewed.created_time == record.created_time
    assert viewed.updated_time == record.updated_time
    assert viewed.expires_at is None
    assert await service.get_session(user, record.id) == viewed

    await pause()
    again = await service.mark_viewed(user, record.id)
    assert again.last_viewed_at is not None
    assert again.last_viewed_at > viewed.last_viewed_at
    assert await service.get_session(user, record.id) == again


async def test_mark_viewed_missing_session(service: SessionService, user: str) -> None:
    with pytest.raises(SessionNotFound):
        await service.mark_viewed(user, f"missing-{new_user()}")


async def test_delete_session_takes_its_tasks_and_feedback(
    service: SessionService, user: str
) -> None:
    doomed = await make_conversation(service, user)
    second_task = await service.save_task(
        user, doomed.sid, f"task-{new_user()}", message_bubbles=["second"]
    )
    await service.add_feedback(user, doomed.sid, second_task.id, "down")
    kept = await make_conversation(service, user)

    await service.delete_session(user, doomed.sid)

    with pytest.raises(SessionNotFound):
        await service.get_session(user, doomed.sid)
    with pytest.raises(SessionNotFound):
        await service.list_tasks(user, doomed.sid)
    with pytest.raises(SessionNotFound):
        await service.state(user, doomed.sid)
    with pytest.raises(SessionNotFound):
        await service.delete_session(user, doomed.sid)
    assert await sessions_of(service, user) == [kept.session]
    assert await feedback_of(service, user) == [kept.feedback]
    assert await feedback_of(service, user, session_id=doomed.sid) == []
    assert await feedback_of(service, user, task_id=doomed.tid) == []
    assert await tasks_of(service, user, kept.sid) == [kept.task]

    # The rows are gone, not hidden: their ids are free again.
    moved = await service.save_task(user, kept.sid, doomed.tid, message_bubbles=["moved"])
    assert moved.session_id == kept.sid
    reborn = await service.create_session(user, session_id=doomed.sid)
    assert await tasks_of(service, user, reborn.id) == []
    assert await state_of(service, user, reborn.id) == {}
    assert await feedback_of(service, user, session_id=reborn.id) == []


async def test_delete_missing_session(service: SessionService, user: str) -> None:
    with pytest.raises(SessionNotFound):
        await service.delete_session(user, f"missing-{new_user()}")


# Chat tasks


async def test_save_task_inserts_then_updates(service: SessionService, user: str) -> None:
    session = await service.create_session(user)
    task_id = f"task-{new_user()}"
    before = now_ms()

    inserted = await service.save_task(
        user,
        session.id,
        task_id,
        user_message="Wie wird das Wetter? 🌦",
        message_bubbles=RICH_JSON,
        task_metadata=RICH_METADATA,
    )

    assert inserted.id == task_id
    assert inserted.session_id == session.id
    assert inserted.user_id == user
    assert inserted.user_message == "Wie wird das Wetter? 🌦"
    assert_json_equal(inserted.message_bubbles, RICH_JSON)
    assert_json_equal(inserted.task_metadata, RICH_METADATA)
    assert before <= inserted.created_time <= now_ms()
    assert inserted.updated_time == inserted.created_time
    listed = await service.list_tasks(user, session.id)
    assert listed.items == [inserted]
    assert listed.next_cursor is None
    assert_json_equal(listed.items[0].message_bubbles, RICH_JSON)
    assert_json_equal(listed.items[0].task_metadata, RICH_METADATA)

    await pause()
    new_bubbles = [{"type": "text", "text": "Sonnig ☀️", "parts": {"a": {"b": {"c": [1.5]}}}}]
    updated = await service.save_task(
        user,
        session.id,
        task_id,
        user_message="edited ✏️",
        message_bubbles=new_bubbles,
        task_metadata={"done": True},
    )

    assert updated.id == task_id
    assert updated.session_id == session.id
    assert updated.user_id == user
    assert updated.user_message == "edited ✏️"
    assert_json_equal(updated.message_bubbles, new_bubbles)
    assert_json_equal(updated.task_metadata, {"done": True})
    assert updated.created_time == inserted.created_time
    assert updated.updated_time > inserted.updated_time
    assert (await service.list_tasks(user, session.id)).items == [updated]

    # Content is replaced, not merged: a save without a message or metadata clears them.
    cleared = await service.save_task(user, session.id, task_id, message_bubbles=[])
    assert cleared.user_message is None
    assert_json_equal(cleared.message_bubbles, [])
    assert cleared.task_metadata is None
    assert cleared.created_time == inserted.created_time
    assert (await service.list_tasks(user, session.id)).items == [cleared]


async def test_save_task_defaults(service: SessionService, user: str) -> None:
    session = await service.create_session(user)

    task = await service.save_task(user, session.id, f"task-{new_user()}")

    assert task.user_message is None
    assert_json_equal(task.message_bubbles, [])
    assert task.task_metadata is None
    assert (await service.list_tasks(user, session.id)).items == [task]


@pytest.mark.parametrize(
    "value",
    [
        {"a": {"b": {"c": {"d": ["deep", {"e": None}]}}}},
        "just a string with emoji 🐍",
        0,
        -(2**53),
        3.141592653589793,
        True,
        None,
        [],
        {},
        "x" * 100_000 + "🚀",
        ["NUL \x00 and controls \x1f\x7f escaped in JSON"],
    ],
    ids=[
        "nested",
        "string",
        "zero",
        "big-int",
        "float",
        "bool",
        "null",
        "empty-list",
        "empty-dict",
        "100k-chars",
        "nul-in-a-string",
    ],
)
async def test_task_json_values_round_trip(service: SessionService, user: str, value: Any) -> None:
    session = await service.create_session(user)

    saved = await service.save_task(
        user, session.id, f"task-{new_user()}", message_bubbles=value, task_metadata=value
    )

    [listed] = (await service.list_tasks(user, session.id)).items
    for record in (saved, listed):
        assert_json_equal(record.message_bubbles, value)
        assert_json_equal(record.task_metadata, value)


async def test_list_tasks_oldest_first_and_updates_keep_their_place(
    service: SessionService, user: str
) -> None:
    session = await service.create_session(user)
    tasks = []
    for index in range(4):
        tasks.append(
            await service.save_task(
                user, session.id, f"task-{index}-{new_user()}", message_bubbles=[index]
            )
        )
        await pause()

    updated = await service.save_task(user, session.id, tasks[0].id, message_bubbles=["updated"])

    assert (await service.list_tasks(user, session.id)).items == [updated, *tasks[1:]]


async def test_save_task_into_a_missing_session(service: SessionService, user: str) -> None:
    session_id = f"missing-{new_user()}"
    task_id = f"task-{new_user()}"

    with pytest.raises(SessionNotFound):
        await service.save_task(user, session_id, task_id, message_bubbles=["x"])

    created = await service.create_session(user, session_id=session_id)
    assert await tasks_of(service, user, created.id) == []
    # Nothing was written under that task id either.
    other = await service.create_session(user)
    moved = await service.save_task(user, other.id, task_id, message_bubbles=["y"])
    assert moved.session_id == other.id


async def test_list_tasks_of_a_missing_session(service: SessionService, user: str) -> None:
    with pytest.raises(SessionNotFound):
        await service.list_tasks(user, f"missing-{new_user()}")


async def test_task_id_of_another_conversation_conflicts(
    service: SessionService, user: str
) -> None:
    first = await make_conversation(service, user)
    second = await service.create_session(user)

    with pytest.raises(IdConflict) as raised:
        await service.save_task(
            user, second.id, first.tid, user_message="hijack", message_bubbles=["hijack"]
        )

    assert raised.value.field == "task_id"
    assert raised.value.value == first.tid
    assert await tasks_of(service, user, first.sid) == [first.task]
    assert await tasks_of(service, user, second.id) == []


async def test_task_ids_are_per_user(service: SessionService) -> None:
    """Two users saving the same task id, each in their own conversation: both succeed,
    each sees only their own, and rating or deleting one leaves the other as it was."""
    owner, stranger = new_user(), new_user()
    theirs = await make_conversation(service, owner)
    before = await snapshot(service, owner)
    mine = await service.create_session(stranger)

    saved = await service.save_task(
        stranger, mine.id, theirs.tid, user_message="mine", message_bubbles=["mine"]
    )

    assert (saved.id, saved.session_id, saved.user_id) == (theirs.tid, mine.id, stranger)
    assert [task.user_message for task in await tasks_of(service, stranger, mine.id)] == ["mine"]
    assert await snapshot(service, owner) == before
    # Saving it again updates the stranger's task, never the owner's.
    again = await service.save_task(stranger, mine.id, theirs.tid, message_bubbles=["again"])
    assert again.created_time == saved.created_time
    rated = await service.add_feedback(stranger, mine.id, theirs.tid, "down", "meh")
    assert (await service.list_feedback(stranger, task_id=theirs.tid)).items == [rated]
    assert await snapshot(service, owner) == before
    # The owner's task id in another of *their* conversations still conflicts.
    with pytest.raises(IdConflict):
        await service.save_task(stranger, (await service.create_session(stranger)).id, theirs.tid)
    # Deleting the stranger's conversation takes only the stranger's task and rating.
    await service.delete_session(stranger, mine.id)
    assert (await service.list_feedback(stranger)).items == []
    assert await snapshot(service, owner) == before


async def test_concurrent_saves_of_one_task(service: SessionService, user: str) -> None:
    session = await service.create_session(user)
    task_id = f"task-{new_user()}"

    saved = await asyncio.gather(
        *(
            service.save_task(
                user,
                session.id,
                task_id,
                user_message=f"message {index}",
                message_bubbles=[{"index": index}],
                task_metadata={"index": index},
            )
            for index in range(50)
        )
    )

    assert all(record.id == task_id for record in saved)
    page = await service.list_tasks(user, session.id, limit=1000)
    assert page.next_cursor is None
    [task] = page.items
    # One write won as a whole: its message, bubbles and metadata belong together.
    index = task.task_metadata["index"]
    assert index in range(50)
    assert task.user_message == f"message {index}"
    assert_json_equal(task.message_bubbles, [{"index": index}])
    assert_json_equal(task.task_metadata, {"index": index})
    # One insert, the rest updates: every call returned the one created_time.
    assert {record.created_time for record in saved} == {task.created_time}


# Feedback


async def test_add_feedback(service: SessionService, user: str) -> None:
    session = await service.create_session(user)
    task = await service.save_task(user, session.id, f"task-{new_user()}")
    before = now_ms()

    record = await service.add_feedback(user, session.id, task.id, "up", "Great answer 👍")

    assert record.session_id == session.id
    assert record.task_id == task.id
    assert record.user_id == user
    assert record.rating == "up"
    assert record.comment == "Great answer 👍"
    assert before <= record.created_time <= now_ms()
    assert isinstance(record.id, str)
    assert record.id
    assert (await service.list_feedback(user)).items == [record]


async def test_second_feedback_replaces_the_first(service: SessionService, user: str) -> None:
    session = await service.create_session(user)
    task = await service.save_task(user, session.id, f"task-{new_user()}")
    first = await service.add_feedback(user, session.id, task.id, "up", "good")
    await pause()

    second = await service.add_feedback(user, session.id, task.id, "down")

    assert second.rating == "down"
    assert second.comment is None
    assert second.task_id == task.id
    assert second.created_time > first.created_time
    page = await service.list_feedback(user, limit=1000)
    assert page.items == [second]
    assert await feedback_of(service, user, task_id=task.id) == [second]
    assert await feedback_of(service, user, rating="up") == []

    third = await service.add_feedback(user, session.id, task.id, "up", "changed my mind")
    assert await feedback_of(service, user) == [third]
    assert third.comment == "changed my mind"


async def test_feedback_on_a_task_of_another_conversation_or_a_missing_task(
    service: SessionService, user: str
) -> None:
    first = await make_conversation(service, user)
    second = await service.create_session(user)

    with pytest.raises(SessionNotFound):
        await service.add_feedback(user, second.id, first.tid, "down")
    with pytest.raises(SessionNotFound):
        await service.add_feedback(user, first.sid, f"missing-{new_user()}", "down")
    with pytest.raises(SessionNotFound):
        await service.add_feedback(user, f"missing-{new_user()}", first.tid, "down")

    assert await feedback_of(service, user) == [first.feedback]


async def test_list_feedback_filters(service: SessionService, user: str) -> None:
    sessions = [await service.create_session(user) for _ in range(2)]
    records: list[FeedbackRecord] = []
    for index in range(6):
        session = sessions[index % 2]
        task = await service.save_task(user, session.id, f"task-{index}-{new_user()}")
        rating = "up" if index % 3 else "down"
        records.append(await service.add_feedback(user, session.id, task.id, rating, f"#{index}"))
        await pause()
    times = [record.created_time for record in records]
    assert times == sorted(set(times)), "each feedback should have its own millisecond"

    def expect(keep: Callable[[FeedbackRecord], bool]) -> list[FeedbackRecord]:
        return feedback_order([record for record in records if keep(record)])

    assert await feedback_of(service, user) == expect(lambda r: True)
    assert await feedback_of(service, user) == records[::-1]
    assert await feedback_of(service, user, session_id=sessions[0].id) == expect(
        lambda r: r.session_id == sessions[0].id
    )
    assert await feedback_of(service, user, task_id=records[3].task_id) == [records[3]]
    assert await feedback_of(service, user, rating="up") == expect(lambda r: r.rating == "up")
    assert await feedback_of(service, user, rating="down") == expect(lambda r: r.rating == "down")
    # since is inclusive, until exclusive.
    assert await feedback_of(service, user, since=times[2]) == expect(
        lambda r: r.created_time >= times[2]
    )
    assert await feedback_of(service, user, until=times[2]) == expect(
        lambda r: r.created_time < times[2]
    )
    assert await feedback_of(service, user, since=times[1], until=times[4]) == records[1:4][::-1]
    assert await feedback_of(service, user, since=times[3], until=times[3]) == []
    assert await feedback_of(service, user, since=times[5] + 1) == []
    assert await feedback_of(service, user, until=times[0]) == []
    assert await feedback_of(
        service, user, session_id=sessions[1].id, rating="up", since=times[1], until=times[5]
    ) == expect(
        lambda r: (
            r.session_id == sessions[1].id
            and r.rating == "up"
            and times[1] <= r.created_time < times[5]
        )
    )
    assert (
        await feedback_of(service, user, session_id=sessions[0].id, task_id=records[1].task_id)
        == []
    )
    assert await feedback_of(service, user, session_id=f"missing-{new_user()}") == []

    # Filtered listings paginate too.
    pages = await pages_of(
        lambda cursor: service.list_feedback(user, rating="up", limit=1, cursor=cursor)
    )
    assert [page.items for page in pages] == [[r] for r in expect(lambda r: r.rating == "up")]


# State


async def test_state_get_set_update_delete_keys_items_clear(
    service: SessionService, user: str
) -> None:
    session = await service.create_session(user)
    state = await service.state(user, session.id)

    assert isinstance(state, SessionState)
    assert await state.keys() == []
    assert await state.items() == []
    assert await state.get("missing") is None
    assert await state.get("missing", "fallback") == "fallback"

    await state.set("count", 1)
    await state.update({"nested": {"a": [1, {"b": "ü🚀"}]}, "flag": False, "nothing": None})

    assert await state.get("count") == 1
    assert_json_equal(await state.get("nested"), {"a": [1, {"b": "ü🚀"}]})
    assert await state.get("flag") is False
    assert await state.get("nothing", "fallback") is None
    assert sorted(await state.keys()) == ["count", "flag", "nested", "nothing"]
    assert sorted(await state.items()) == sorted(
        [("count", 1), ("nested", {"a": [1, {"b": "ü🚀"}]}), ("flag", False), ("nothing", None)]
    )

    await state.set("count", 2)
    await state.delete("count", "never-set")
    assert sorted(await state.keys()) == ["flag", "nested", "nothing"]
    assert await state.get("count") is None

    fresh = await service.state(user, session.id)
    assert dict(await fresh.items()) == {
        "nested": {"a": [1, {"b": "ü🚀"}]},
        "flag": False,
        "nothing": None,
    }

    await state.clear()
    assert await state.keys() == []
    assert await state_of(service, user, session.id) == {}


async def test_state_persists_across_a_new_handle(service: SessionService, user: str) -> None:
    session = await service.create_session(user)
    first = await service.state(user, session.id)
    value = {"plan": ["step 1", "step 2"], "emoji": "🧭", "n": 1.25, "deep": {"x": {"y": None}}}
    await first.set("memory", value)
    await first.set("turns", 3)

    second = await service.state(user, session.id)

    assert_json_equal(await second.get("memory"), value)
    assert await second.get("turns") == 3
    assert sorted(await second.keys()) == ["memory", "turns"]


async def test_state_namespaces_are_kept_apart(service: SessionService, user: str) -> None:
    session = await service.create_session(user)
    default = await service.state(user, session.id)
    planner = await service.state(user, session.id, "planner")
    coder = await service.state(user, session.id, namespace="coder")

    await default.set("key", "default")
    await planner.set("key", "planner")
    await coder.update({"key": "coder", "only-coder": True})

    assert await state_of(service, user, session.id) == {"key": "default"}
    assert await state_of(service, user, session.id, "planner") == {"key": "planner"}
    assert await state_of(service, user, session.id, "coder") == {
        "key": "coder",
        "only-coder": True,
    }
    assert await state_of(service, user, session.id, "unused") == {}

    await planner.clear()
    await coder.delete("key")

    assert await state_of(service, user, session.id) == {"key": "default"}
    assert await state_of(service, user, session.id, "planner") == {}
    assert await state_of(service, user, session.id, "coder") == {"only-coder": True}


async def test_state_handles_see_other_writes_after_refresh(
    service: SessionService, user: str
) -> None:
    session = await service.create_session(user)
    first = await service.state(user, session.id)
    second = await service.state(user, session.id)

    await first.set("from-first", 1)
    assert await second.get("from-first") is None  # a snapshot until refreshed
    # second's version is stale: its write reloads and re-applies only its own key.
    await second.set("from-second", 2)
    assert await second.get("from-first") == 1

    await first.refresh()
    assert dict(await first.items()) == {"from-first": 1, "from-second": 2}
    assert await state_of(service, user, session.id) == {"from-first": 1, "from-second": 2}


async def test_state_write_is_an_update_of_the_conversation(
    service: SessionService, user: str
) -> None:
    older = await service.create_session(user, name="older")
    await pause()
    newer = await service.create_session(user, name="newer")
    await pause()

    state = await service.state(user, older.id)
    await state.set("touched", True)

    touched = await service.get_session(user, older.id)
    assert touched.updated_time > newer.updated_time
    assert (await service.list_sessions(user)).items == [touched, newer]


async def test_concurrent_writers_of_distinct_keys_all_win(
    service: SessionService, user: str
) -> None:
    session = await service.create_session(user)
    handles = [await service.state(user, session.id) for _ in range(50)]

    await asyncio.gather(
        *(handle.set(f"key-{index}", {"writer": index}) for index, handle in enumerate(handles))
    )

    assert await state_of(service, user, session.id) == {
        f"key-{index}": {"writer": index} for index in range(50)
    }


async def test_concurrent_writers_of_one_key(service: SessionService, user: str) -> None:
    session = await service.create_session(user)
    setup = await service.state(user, session.id)
    await setup.set("other", "kept")
    handles = [await service.state(user, session.id) for _ in range(20)]

    await asyncio.gather(*(handle.set("key", index) for index, handle in enumerate(handles)))

    final = await state_of(service, user, session.id)
    assert set(final) == {"key", "other"}
    assert final["key"] in range(20)
    assert final["other"] == "kept"


# Pagination
#
# The service reads the clock itself. To make rows tie in time for certain, these
# tests can replace its clock (``agentsession.service.now_ms``) for the whole test:
# ``real`` leaves it alone (rows are written at once, so some may share a
# millisecond), ``frozen`` gives every row the same millisecond (pages are ordered by
# id alone), ``ticking`` moves on one millisecond every fourth reading (ties and time
# order mixed, so page boundaries fall inside and between groups of ties).

CLOCKS = ("real", "frozen", "ticking")
LIMITS = (1, 2, 3, 4, 5, 7, 24, 25, 26, 1000)


@pytest.fixture(params=CLOCKS)
def clock(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    kind = str(request.param)
    if kind != "real":
        start = service_module.now_ms()
        readings = itertools.count()
        step = 0 if kind == "frozen" else 1
        monkeypatch.setattr(service_module, "now_ms", lambda: start + step * (next(readings) // 4))
    return kind


def assert_ties(times: list[int], clock: str) -> None:
    """The rows of a pagination test share milliseconds as ``clock`` promises."""
    if clock == "frozen":
        assert len(set(times)) == 1
    elif clock == "ticking":
        assert 1 < len(set(times)) < len(times)


def _sizes(total: int, limit: int) -> list[int]:
    """The page sizes of ``total`` items by ``limit``: full pages, no empty last page."""
    full, rest = divmod(total, limit)
    return [limit] * full + ([rest] if rest else []) or [0]


async def assert_pages(
    expected: list[T], fetch: Callable[[str | None, int], Awaitable[Page[T]]]
) -> None:
    """Every page size gives ``expected`` exactly: nothing repeated, skipped or reordered."""
    for limit in LIMITS:
        pages = await pages_of(lambda cursor, limit=limit: fetch(cursor, limit))
        assert [item for page in pages for item in page.items] == expected, limit
        assert [len(page.items) for page in pages] == _sizes(len(expected), limit), limit


async def test_list_sessions_pages(service: SessionService, user: str, clock: str) -> None:
    created = await asyncio.gather(*(service.create_session(user) for _ in range(25)))
    assert_ties([record.updated_time for record in created], clock)

    await assert_pages(
        session_order(list(created)),
        lambda cursor, limit: service.list_sessions(user, limit=limit, cursor=cursor),
    )


async def test_list_tasks_pages(service: SessionService, user: str, clock: str) -> None:
    session = await service.create_session(user)
    created = await asyncio.gather(
        *(
            service.save_task(user, session.id, f"task-{new_user()}", message_bubbles=[index])
            for index in range(25)
        )
    )
    assert_ties([record.created_time for record in created], clock)

    await assert_pages(
        task_order(list(created)),
        lambda cursor, limit: service.list_tasks(user, session.id, limit=limit, cursor=cursor),
    )


async def test_list_feedback_pages(service: SessionService, user: str, clock: str) -> None:
    session = await service.create_session(user)
    tasks = await asyncio.gather(
        *(service.save_task(user, session.id, f"task-{new_user()}") for _ in range(25))
    )
    created = await asyncio.gather(
        *(service.add_feedback(user, session.id, task.id, "up") for task in tasks)
    )
    assert_ties([record.created_time for record in created], clock)

    await assert_pages(
        feedback_order(list(created)),
        lambda cursor, limit: service.list_feedback(user, limit=limit, cursor=cursor),
    )


class HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=HasId)


async def page_while_inserting(
    existing: list[R],
    fetch: Callable[[str | None], Awaitable[Page[R]]],
    insert: Callable[[], Awaitable[list[R]]],
    key: Callable[[R], tuple[int, str]],
    limit: int,
) -> list[R]:
    """Page through a listing, inserting rows between page fetches; return what was seen.

    Each page must be exactly what keyset paging gives over the rows present at that
    moment: the first ``limit`` rows that sort after the last row already seen. So the
    existing rows come each exactly once and in order, and new rows appear only
    where they sort after the page already read.
    """
    rows = list(existing)
    seen: list[R] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        after = [row for row in sorted(rows, key=key) if not seen or key(row) > key(seen[-1])]
        assert page.items == after[:limit]
        assert (page.next_cursor is None) == (len(after) <= limit)
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        rows.extend(await insert())
    assert len({row.id for row in seen}) == len(seen)
    assert [row for row in seen if row in existing] == sorted(existing, key=key)
    return seen


def rounds(count: int, make: Callable[[], Awaitable[list[R]]]) -> Callable[[], Awaitable[list[R]]]:
    """``make`` for the first ``count`` calls, then nothing more."""
    remaining = [count]

    async def insert() -> list[R]:
        if not remaining[0]:
            return []
        remaining[0] -= 1
        return await make()

    return insert


async def test_list_sessions_pages_while_sessions_are_created(
    service: SessionService, user: str, clock: str
) -> None:
    existing = list(await asyncio.gather(*(service.create_session(user) for _ in range(12))))
    await pause()  # on the real clock, rows made from now on are newer than these

    async def create_two() -> list[SessionRecord]:
        return list(await asyncio.gather(*(service.create_session(user) for _ in range(2))))

    seen = await page_while_inserting(
        existing,
        lambda cursor: service.list_sessions(user, limit=3, cursor=cursor),
        rounds(3, create_two),
        lambda record: (-record.updated_time, record.id),
        3,
    )

    if clock == "real":
        # New conversations are newer than every page already read: none shows up.
        assert seen == session_order(existing)
    assert len(await sessions_of(service, user)) == 18


async def test_list_tasks_pages_while_tasks_are_saved(
    service: SessionService, user: str, clock: str
) -> None:
    session = await service.create_session(user)

    async def save(count: int) -> list[TaskRecord]:
        return list(
            await asyncio.gather(
                *(service.save_task(user, session.id, f"task-{new_user()}") for _ in range(count))
            )
        )

    existing = await save(12)
    await pause()  # on the real clock, rows made from now on are newer than these
    seen = await page_while_inserting(
        existing,
        lambda cursor: service.list_tasks(user, session.id, limit=3, cursor=cursor),
        rounds(3, lambda: save(2)),
        lambda record: (record.created_time, record.id),
        3,
    )

    if clock == "real":
        # Tasks come oldest first: the new ones follow every existing one.
        assert seen == task_order(existing) + task_order(seen[12:])
        assert len(seen) == 18
    assert len(await tasks_of(service, user, session.id)) == 18


async def test_list_feedback_pages_while_feedback_is_added(
    service: SessionService, user: str, clock: str
) -> None:
    session = await service.create_session(user)
    tasks = list(
        await asyncio.gather(
            *(service.save_task(user, session.id, f"task-{new_user()}") for _ in range(18))
        )
    )

    async def rate(count: int) -> list[FeedbackRecord]:
        chosen = [tasks.pop() for _ in range(count)]
        return list(
            await asyncio.gather(
                *(service.add_feedback(user, session.id, task.id, "down") for task in chosen)
            )
        )

    existing = await rate(12)
    await pause()  # on the real clock, rows made from now on are newer than these
    seen = await page_while_inserting(
        existing,
        lambda cursor: service.list_feedback(user, limit=3, cursor=cursor),
        rounds(3, lambda: rate(2)),
        lambda record: (-record.created_time, record.id),
        3,
    )

    if clock == "real":
        assert seen == feedback_order(existing)
    assert len(await feedback_of(service, user)) == 18


# Isolation between users


async def test_another_user_cannot_touch_a_conversation(service: SessionService) -> None:
    owner, stranger = new_user(), new_user()
    theirs = await make_conversation(service, owner)
    before = await snapshot(service, owner)
    own = await service.create_session(stranger)
    own_task = await service.save_task(stranger, own.id, f"task-{new_user()}")
    sid, tid = theirs.sid, theirs.tid
    default = await service.state(owner, sid)
    agent_b = await service.state(owner, sid, "agent-b")

    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("get_session", lambda: service.get_session(stranger, sid)),
        ("rename_session", lambda: service.rename_session(stranger, sid, "stolen")),
        ("rename_session(None)", lambda: service.rename_session(stranger, sid, None)),
        ("mark_viewed", lambda: service.mark_viewed(stranger, sid)),
        ("delete_session", lambda: service.delete_session(stranger, sid)),
        ("list_tasks", lambda: service.list_tasks(stranger, sid)),
        (
            "save_task new id",
            lambda: service.save_task(stranger, sid, f"task-{new_user()}", message_bubbles=["x"]),
        ),
        (
            "save_task their id",
            lambda: service.save_task(stranger, sid, tid, message_bubbles=["x"]),
        ),
        ("add_feedback", lambda: service.add_feedback(stranger, sid, tid, "down", "bad")),
        (
            "add_feedback own session",
            lambda: service.add_feedback(stranger, own.id, tid, "down", "bad"),
        ),
        (
            "add_feedback their session",
            lambda: service.add_feedback(stranger, sid, own_task.id, "down", "bad"),
        ),
        ("state", lambda: service.state(stranger, sid)),
        ("state namespace", lambda: service.state(stranger, sid, "agent-b")),
        (
            "state set on a forged handle",
            lambda: forged_state(service, stranger, default).set("a", "stolen"),
        ),
        (
            "state clear on a forged handle",
            lambda: forged_state(service, stranger, agent_b).clear(),
        ),
    ]
    for name, call in calls:
        with pytest.raises(SessionNotFound):
            await call()
        assert await snapshot(service, owner) == before, name

    with pytest.raises(IdConflict):
        await service.create_session(stranger, session_id=sid)

    assert await sessions_of(service, stranger) == [own]
    assert await feedback_of(service, stranger) == []
    assert await feedback_of(service, stranger, session_id=sid) == []
    assert await feedback_of(service, stranger, task_id=tid) == []
    assert await tasks_of(service, stranger, own.id) == [own_task]
    # The owner's task id is no secret to learn: the stranger's save of it is their own.
    mine = await service.save_task(stranger, own.id, tid, message_bubbles=["x"])
    assert (mine.user_id, mine.session_id) == (stranger, own.id)
    assert await snapshot(service, owner) == before
    # And the owner still has everything, unchanged, as the records first returned.
    assert before["sessions"] == [theirs.session]
    assert before["conversations"][sid]["tasks"] == [theirs.task]
    assert before["feedback"] == [theirs.feedback]


async def test_listings_show_only_the_users_rows(service: SessionService) -> None:
    first, second = new_user(), new_user()
    mine = [await make_conversation(service, first) for _ in range(3)]
    theirs = [await make_conversation(service, second) for _ in range(2)]

    assert await sessions_of(service, first) == session_order([c.session for c in mine])
    assert await sessions_of(service, second) == session_order([c.session for c in theirs])
    assert await feedback_of(service, first) == feedback_order([c.feedback for c in mine])
    assert await feedback_of(service, second) == feedback_order([c.feedback for c in theirs])
    assert await sessions_of(service, new_user()) == []
    assert await feedback_of(service, new_user()) == []


# Session TTL


async def test_ttl_writes_slide_the_expiry(make_service: MakeService, user: str) -> None:
    service = await make_service(ttl=1)
    record = await service.create_session(user)
    assert record.expires_at == record.created_time + 1000
    expiries = [record.expires_at]

    async def rename() -> None:
        await service.rename_session(user, record.id, "renamed")

    async def set_state() -> None:
        await (await service.state(user, record.id)).set("k", "v")

    async def mark_viewed() -> None:
        await service.mark_viewed(user, record.id)

    for write in (rename, set_state, mark_viewed):
        await pause()
        before = now_ms()
        await write()
        expires_at = (await service.get_session(user, record.id)).expires_at
        assert expires_at is not None
        assert expires_at > expiries[-1], write.__name__
        assert before + 1000 <= expires_at <= now_ms() + 1000
        expiries.append(expires_at)

    listed = (await service.list_sessions(user)).items
    assert [item.expires_at for item in listed] == [expiries[-1]]


async def test_ttl_an_idle_conversation_expires(make_service: MakeService, user: str) -> None:
    service = await make_service(ttl=1)
    idle = await make_conversation(service, user)
    idle_state = await service.state(user, idle.sid)  # loaded before it expires
    active = await service.create_session(user, name="active")
    start = now_ms()

    await asyncio.sleep(0.45)
    await service.rename_session(user, active.id, "still here")
    await asyncio.sleep(0.45)
    await (await service.state(user, active.id)).set("alive", True)
    await asyncio.sleep(max(0.0, (start + 1200 - now_ms()) / 1000))

    # idle expired 1 s after it was last written; active was written 0.3 s ago.
    sid, tid = idle.sid, idle.tid
    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("get_session", lambda: service.get_session(user, sid)),
        ("list_tasks", lambda: service.list_tasks(user, sid)),
        ("save_task", lambda: service.save_task(user, sid, tid, message_bubbles=["late"])),
        ("save_task new", lambda: service.save_task(user, sid, f"task-{new_user()}")),
        ("state", lambda: service.state(user, sid)),
        ("state set", lambda: idle_state.set("a", 2)),
        ("state clear", lambda: idle_state.clear()),
        ("rename_session", lambda: service.rename_session(user, sid, "revived?")),
        ("mark_viewed", lambda: service.mark_viewed(user, sid)),
        ("add_feedback", lambda: service.add_feedback(user, sid, tid, "down")),
        ("delete_session", lambda: service.delete_session(user, sid)),
    ]
    for name, call in calls:
        with pytest.raises(SessionNotFound):
            await call()
        assert [s.id for s in await sessions_of(service, user)] == [active.id], name
    with pytest.raises(IdConflict):
        await service.create_session(user, session_id=sid)

    alive = await service.get_session(user, active.id)
    assert alive.name == "still here"
    assert await state_of(service, user, active.id) == {"alive": True}
    viewed = await service.mark_viewed(user, active.id)
    assert viewed.expires_at is not None
    assert alive.expires_at is not None
    assert viewed.expires_at > alive.expires_at


# Bad input: InvalidInput naming the field, and nothing written


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def _set_state(c: Conversation, key: Any, value: Any, namespace: str = "default") -> None:
    await (await c.service.state(c.user, c.sid, namespace)).set(key, value)


async def _update_state(c: Conversation, values: dict[Any, Any]) -> None:
    await (await c.service.state(c.user, c.sid)).update(values)


async def _delete_state(c: Conversation, *keys: Any) -> None:
    await (await c.service.state(c.user, c.sid)).delete(*keys)


BadCall = Callable[[Conversation], Awaitable[Any]]
LONG = "x" * 256


def nested(depth: int) -> list[Any]:
    """``depth`` lists, one inside the other."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


BAD_INPUT: list[tuple[str, str, BadCall]] = [
    # create_session
    ("create name 256", "name", lambda c: c.service.create_session(c.user, name="n" * 256)),
    ("create name NUL", "name", lambda c: c.service.create_session(c.user, name="a\x00b")),
    ("create name surrogate", "name", lambda c: c.service.create_session(c.user, name="\ud800")),
    ("create name int", "name", lambda c: c.service.create_session(c.user, name=5)),  # type: ignore[arg-type]
    ("create id empty", "session_id", lambda c: c.service.create_session(c.user, session_id="")),
    ("create id 256", "session_id", lambda c: c.service.create_session(c.user, session_id=LONG)),
    (
        "create id NUL",
        "session_id",
        lambda c: c.service.create_session(c.user, session_id="a\x00"),
    ),
    ("create agent empty", "agent_id", lambda c: c.service.create_session(c.user, agent_id="")),
    ("create agent 256", "agent_id", lambda c: c.service.create_session(c.user, agent_id=LONG)),
    ("create client 256", "client_id", lambda c: c.service.create_session(c.user, client_id=LONG)),
    ("create user empty", "user_id", lambda c: c.service.create_session("")),
    ("create user 256", "user_id", lambda c: c.service.create_session(LONG)),
    ("create user None", "user_id", lambda c: c.service.create_session(None)),  # type: ignore[arg-type]
    # conversations
    ("get id empty", "session_id", lambda c: c.service.get_session(c.user, "")),
    ("get id 256", "session_id", lambda c: c.service.get_session(c.user, LONG)),
    ("get user empty", "user_id", lambda c: c.service.get_session("", c.sid)),
    ("rename name 256", "name", lambda c: c.service.rename_session(c.user, c.sid, "n" * 256)),
    ("rename name NUL", "name", lambda c: c.service.rename_session(c.user, c.sid, "bad\x00name")),
    ("rename name int", "name", lambda c: c.service.rename_session(c.user, c.sid, 1)),  # type: ignore[arg-type]
    ("rename id 256", "session_id", lambda c: c.service.rename_session(c.user, LONG, "x")),
    ("viewed id empty", "session_id", lambda c: c.service.mark_viewed(c.user, "")),
    ("delete id 256", "session_id", lambda c: c.service.delete_session(c.user, LONG)),
    ("delete user empty", "user_id", lambda c: c.service.delete_session("", c.sid)),
    # save_task (the existing task id unless said otherwise: it must stay unchanged)
    ("task id empty", "task_id", lambda c: c.service.save_task(c.user, c.sid, "")),
    ("task id 256", "task_id", lambda c: c.service.save_task(c.user, c.sid, LONG)),
    (
        "task bubbles object",
        "message_bubbles",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, message_bubbles=[object()]),
    ),
    (
        "task bubbles nan",
        "message_bubbles",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, message_bubbles=[float("nan")]),
    ),
    (
        "task bubbles set",
        "message_bubbles",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, message_bubbles={1, 2}),
    ),
    (
        "task bubbles nested inf",
        "message_bubbles",
        lambda c: c.service.save_task(
            c.user, c.sid, c.tid, message_bubbles=[{"a": [float("inf")]}]
        ),
    ),
    (
        "task bubbles nested 101 deep",
        "message_bubbles",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, message_bubbles=nested(101)),
    ),
    (
        "task metadata nested past the recursion limit",
        "task_metadata",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, task_metadata={"a": nested(5000)}),
    ),
    (
        "new task bubbles object",
        "message_bubbles",
        lambda c: c.service.save_task(c.user, c.sid, "new-task", message_bubbles=object()),
    ),
    (
        "task metadata object",
        "task_metadata",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, task_metadata={"k": object()}),
    ),
    (
        "task metadata nan",
        "task_metadata",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, task_metadata=float("nan")),
    ),
    (
        "task message NUL",
        "user_message",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, user_message="a\x00b"),
    ),
    (
        "task message int",
        "user_message",
        lambda c: c.service.save_task(c.user, c.sid, c.tid, user_message=5),  # type: ignore[arg-type]
    ),
    # feedback
    (
        "feedback rating meh",
        "rating",
        lambda c: c.service.add_feedback(c.user, c.sid, c.tid, "meh"),
    ),
    (
        "feedback rating case",
        "rating",
        lambda c: c.service.add_feedback(c.user, c.sid, c.tid, "UP"),
    ),
    (
        "feedback comment NUL",
        "comment",
        lambda c: c.service.add_feedback(c.user, c.sid, c.tid, "down", "x\x00"),
    ),
    ("feedback task empty", "task_id", lambda c: c.service.add_feedback(c.user, c.sid, "", "up")),
    (
        "feedback session 256",
        "session_id",
        lambda c: c.service.add_feedback(c.user, LONG, c.tid, "up"),
    ),
    ("list feedback rating meh", "rating", lambda c: c.service.list_feedback(c.user, rating="meh")),
    ("list feedback since -1", "since", lambda c: c.service.list_feedback(c.user, since=-1)),
    ("list feedback since float", "since", lambda c: c.service.list_feedback(c.user, since=1.5)),  # type: ignore[arg-type]
    ("list feedback until str", "until", lambda c: c.service.list_feedback(c.user, until="5")),  # type: ignore[arg-type]
    (
        "list feedback session empty",
        "session_id",
        lambda c: c.service.list_feedback(c.user, session_id=""),
    ),
    # limits
    ("sessions limit 0", "limit", lambda c: c.service.list_sessions(c.user, limit=0)),
    ("sessions limit 1001", "limit", lambda c: c.service.list_sessions(c.user, limit=1001)),
    ("sessions limit '5'", "limit", lambda c: c.service.list_sessions(c.user, limit="5")),  # type: ignore[arg-type]
    ("sessions limit -1", "limit", lambda c: c.service.list_sessions(c.user, limit=-1)),
    ("tasks limit 0", "limit", lambda c: c.service.list_tasks(c.user, c.sid, limit=0)),
    ("tasks limit 1001", "limit", lambda c: c.service.list_tasks(c.user, c.sid, limit=1001)),
    ("tasks limit '5'", "limit", lambda c: c.service.list_tasks(c.user, c.sid, limit="5")),  # type: ignore[arg-type]
    ("feedback limit 0", "limit", lambda c: c.service.list_feedback(c.user, limit=0)),
    ("feedback limit 1001", "limit", lambda c: c.service.list_feedback(c.user, limit=1001)),
    ("feedback limit 2.0", "limit", lambda c: c.service.list_feedback(c.user, limit=2.0)),  # type: ignore[arg-type]
    # cursors
    (
        "sessions cursor garbage",
        "cursor",
        lambda c: c.service.list_sessions(c.user, cursor="garbage!!"),
    ),
    (
        "sessions cursor object",
        "cursor",
        lambda c: c.service.list_sessions(c.user, cursor=_cursor({"a": 1})),
    ),
    ("sessions cursor int", "cursor", lambda c: c.service.list_sessions(c.user, cursor=5)),  # type: ignore[arg-type]
    (
        "sessions cursor long id",
        "cursor",
        lambda c: c.service.list_sessions(c.user, cursor=_cursor([1, "i" * 300])),
    ),
    (
        "sessions cursor string time",
        "cursor",
        lambda c: c.service.list_sessions(c.user, cursor=_cursor(["1", "id"])),
    ),
    ("tasks cursor garbage", "cursor", lambda c: c.service.list_tasks(c.user, c.sid, cursor="%%%")),
    (
        "feedback cursor garbage",
        "cursor",
        lambda c: c.service.list_feedback(c.user, cursor="not a cursor"),
    ),
    # state
    ("state namespace empty", "namespace", lambda c: c.service.state(c.user, c.sid, "")),
    ("state namespace 256", "namespace", lambda c: c.service.state(c.user, c.sid, LONG)),
    ("state value object", "state['k']", lambda c: _set_state(c, "k", object())),
    ("state value nan", "state['k']", lambda c: _set_state(c, "k", float("nan"))),
    ("state value 101 deep", "state['k']", lambda c: _set_state(c, "k", nested(101))),
    ("state value set", "state['k']", lambda c: _set_state(c, "k", {1, 2})),
    ("state existing key object", "state['a']", lambda c: _set_state(c, "a", [object()])),
    (
        "state other namespace",
        "state['x']",
        lambda c: _set_state(c, "x", {"y": float("inf")}, "agent-b"),
    ),
    (
        "state update one bad",
        "state['bad']",
        lambda c: _update_state(c, {"good": 1, "bad": object()}),
    ),
    ("state key empty", "key", lambda c: _set_state(c, "", 1)),
    ("state key 256", "key", lambda c: _set_state(c, LONG, 1)),
    ("state key int", "key", lambda c: _set_state(c, 5, 1)),
    ("state update key NUL", "key", lambda c: _update_state(c, {"ok": 1, "a\x00": 1})),
    ("state delete key empty", "key", lambda c: _delete_state(c, "a", "")),
]


@pytest.mark.parametrize(
    ("field", "call"),
    [pytest.param(field, call, id=name) for name, field, call in BAD_INPUT],
)
async def test_bad_input_is_refused_and_writes_nothing(
    conversation: Conversation, field: str, call: BadCall
) -> None:
    before = await snapshot(conversation.service, conversation.user)

    with pytest.raises(InvalidInput) as raised:
        await call(conversation)

    assert raised.value.field == field
    assert await snapshot(conversation.service, conversation.user) == before


async def test_json_nests_up_to_the_limit(service: SessionService, user: str) -> None:
    conversation = await service.create_session(user)
    deepest = nested(MAX_JSON_DEPTH)
    await service.save_task(
        user, conversation.id, f"deep-{conversation.id}", message_bubbles=deepest
    )
    page = await service.list_tasks(user, conversation.id)
    assert page.items[0].message_bubbles == deepest
