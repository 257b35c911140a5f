"""What only the memory store has: its LRU bound, ``sweep`` (which keeps pinned
conversations), copies of stored JSON, and its search text made once per save."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agentsession.common import DAY_MS, now_ms
from agentsession.config import RetentionConfig
from agentsession.errors import IdConflict, SessionNotFound
from agentsession.service import SessionService
from agentsession.stores.base import (
    FeedbackFilter,
    FeedbackRecord,
    SearchQuery,
    SessionRecord,
    Store,
    TaskRecord,
)
from agentsession.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

USER = "alice"


def session(
    session_id: str, *, user: str = USER, updated: int = 1_000, expires_at: int | None = None
) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        user_id=user,
        client_id=None,
        name=None,
        agent_id=None,
        created_time=updated,
        updated_time=updated,
        last_viewed_at=None,
        expires_at=expires_at,
    )


def task(
    task_id: str, session_id: str, *, user: str = USER, at: int = 1_000, bubbles: object = ()
) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        session_id=session_id,
        user_id=user,
        user_message="hi",
        message_bubbles=list(bubbles) if isinstance(bubbles, tuple) else bubbles,
        task_metadata={"k": [1]},
        created_time=at,
        updated_time=at,
    )


def feedback(
    feedback_id: str, session_id: str, task_id: str, *, at: int = 1_000, rating: str = "up"
) -> FeedbackRecord:
    return FeedbackRecord(
        id=feedback_id,
        session_id=session_id,
        task_id=task_id,
        user_id=USER,
        rating=rating,
        comment=None,
        created_time=at,
    )


async def fill(store: MemoryStore, session_id: str, *, expires_at: int | None = None) -> None:
    """A conversation with one task (``<id>-t``) and the user's feedback on it."""
    await store.insert_session(session(session_id, expires_at=expires_at))
    assert await store.save_task(task(f"{session_id}-t", session_id, at=1)) is not None
    saved = await store.save_feedback(
        feedback(f"{session_id}-f", session_id, f"{session_id}-t", at=1), 1
    )
    assert saved is not None


async def everything(store: MemoryStore, now: int) -> tuple[set[str], set[str]]:
    """The ids of the user's live conversations and of all their feedback."""
    sessions = {record.id for record in await store.list_sessions(USER, now, 100, None)}
    rated = {record.id for record in await store.list_feedback(USER, FeedbackFilter(), 100, None)}
    return sessions, rated


def test_is_a_store() -> None:
    store: Store = MemoryStore()
    assert store is not None


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        MemoryStore(max_sessions=0)


async def test_bound_evicts_least_recently_used_with_children() -> None:
    store = MemoryStore(max_sessions=2)
    await fill(store, "a")
    await fill(store, "b")
    assert await store.get_session(USER, "a", 1) is not None  # a is now the most recent
    await fill(store, "c")  # evicts b, the least recently used

    assert await everything(store, 1) == ({"a", "c"}, {"a-f", "c-f"})
    assert await store.get_session(USER, "b", 1) is None
    assert await store.list_tasks(USER, "b", 1, 10, None) is None
    # b's task id is free again: it can go into another conversation.
    assert await store.save_task(task("b-t", "a")) is not None
    # b's id can be reused; that save to a made c the least recently used.
    await store.insert_session(session("b"))
    assert await store.list_tasks(USER, "b", 1, 10, None) == []
    assert await everything(store, 1) == ({"a", "b"}, {"a-f"})


async def test_writes_count_as_use() -> None:
    store = MemoryStore(max_sessions=2)
    await store.insert_session(session("a"))
    await store.insert_session(session("b"))
    assert await store.write_state(USER, "a", 2, None, '{"x":1}', 0) is True
    await store.insert_session(session("c"))
    assert await store.get_session(USER, "b", 2) is None
    assert await store.load_state(USER, "a", 2) == ('{"x":1}', 1)


async def test_service_over_a_bounded_store() -> None:
    service = SessionService(MemoryStore(max_sessions=1), ttl=60)
    first = await service.create_session(USER)
    await service.save_task(USER, first.id, "t1", message_bubbles=[{"text": "hi"}])
    second = await service.create_session(USER)
    with pytest.raises(SessionNotFound):
        await service.get_session(USER, first.id)
    page = await service.list_sessions(USER)
    assert [record.id for record in page.items] == [second.id]
    saved = await service.save_task(USER, second.id, "t1")  # the evicted task's id is free
    assert saved.session_id == second.id


async def test_sweep_deletes_exactly_the_expired_with_children() -> None:
    store = MemoryStore()
    await fill(store, "forever")
    await fill(store, "early", expires_at=100)
    await fill(store, "edge", expires_at=200)  # expires at 200: gone at now=200
    await fill(store, "late", expires_at=300)
    await store.insert_session(session("other", user="bob", expires_at=150))

    # Expired conversations are invisible before the sweep, but still hold their ids.
    assert await everything(store, 200) == (
        {"forever", "late"},
        {"forever-f", "early-f", "edge-f", "late-f"},
    )
    with pytest.raises(IdConflict):
        await store.insert_session(session("early"))
    with pytest.raises(IdConflict):
        await store.save_task(task("early-t", "forever"))

    assert await store.sweep(200) == 3
    assert await everything(store, 200) == ({"forever", "late"}, {"forever-f", "late-f"})
    assert await store.sweep(200) == 0
    # Their ids, and their tasks' ids, are free again.
    await store.insert_session(session("early"))
    assert await store.save_task(task("edge-t", "early")) is not None
    assert await store.get_session("bob", "other", 0) is None
    # What was live is untouched.
    assert [t.id for t in await store.list_tasks(USER, "late", 200, 10, None) or []] == ["late-t"]
    assert await store.sweep(300) == 1  # late
    assert await everything(store, 300) == ({"forever", "early"}, {"forever-f"})


async def test_expired_conversation_is_never_changed() -> None:
    store = MemoryStore()
    await fill(store, "s", expires_at=100)
    assert await store.update_session(USER, "s", 100, None, name="n", rename=True) is None
    assert await store.write_state(USER, "s", 100, None, '{"a":1}', 0) is None
    assert await store.delete_session(USER, "s", 100) is False
    assert await store.save_task(task("s-t2", "s", at=100)) is None
    assert await store.save_feedback(feedback("f2", "s", "s-t", at=100), 100) is None
    # Seen from before its expiry, nothing moved.
    record = await store.get_session(USER, "s", 99)
    assert record == session("s", expires_at=100)
    assert await store.load_state(USER, "s", 99) == ("{}", 0)
    tasks = await store.list_tasks(USER, "s", 99, 10, None)
    assert [t.id for t in tasks or []] == ["s-t"]
    rated = await store.list_feedback(USER, FeedbackFilter(session_id="s"), 10, None)
    assert [f.id for f in rated] == ["s-f"]


async def test_stored_json_is_a_copy() -> None:
    store = MemoryStore()
    await store.insert_session(session("s"))
    bubbles = [{"text": "hi", "parts": [1, 2]}]
    record = task("t", "s", bubbles=bubbles)
    saved = await store.save_task(record)
    assert saved is not None

    # Neither the caller's objects nor the returned ones reach the stored data.
    bubbles[0]["text"] = "changed"
    record.task_metadata["k"].append(2)
    saved.message_bubbles.append("extra")
    saved.task_metadata["new"] = True
    listed = await store.list_tasks(USER, "s", 1, 10, None)
    assert listed is not None
    assert listed[0].message_bubbles == [{"text": "hi", "parts": [1, 2]}]
    assert listed[0].task_metadata == {"k": [1]}

    listed[0].message_bubbles[0]["parts"].clear()
    again = await store.list_tasks(USER, "s", 1, 10, None)
    assert again is not None
    assert again[0].message_bubbles == [{"text": "hi", "parts": [1, 2]}]


async def test_service_json_is_a_copy() -> None:
    service = SessionService(MemoryStore())
    conversation = await service.create_session(USER)
    metadata = {"tags": ["a"]}
    saved = await service.save_task(USER, conversation.id, "t", task_metadata=metadata)
    metadata["tags"].append("b")
    saved.task_metadata["tags"].append("c")
    page = await service.list_tasks(USER, conversation.id)
    assert page.items[0].task_metadata == {"tags": ["a"]}


async def test_session_ties_sort_by_id_ascending() -> None:
    store = MemoryStore()
    for session_id, updated in (("b", 5), ("a", 5), ("c", 5), ("z", 9), ("y", 1)):
        await store.insert_session(session(session_id, updated=updated))
    ordered = await store.list_sessions(USER, 0, 10, None)
    assert [record.id for record in ordered] == ["z", "a", "b", "c", "y"]
    seen: list[str] = []
    after: tuple[int, str] | None = None
    while page := await store.list_sessions(USER, 0, 2, after):
        seen += [record.id for record in page]
        after = page[-1].sort_key
    assert seen == ["z", "a", "b", "c", "y"]


async def test_tasks_and_feedback_keyset_order() -> None:
    store = MemoryStore()
    await store.insert_session(session("s"))
    for task_id, at in (("t2", 5), ("t1", 5), ("t0", 9), ("t3", 1)):
        assert await store.save_task(task(task_id, "s", at=at)) is not None
        assert await store.save_feedback(feedback(f"f-{task_id}", "s", task_id, at=at), at)
    tasks = await store.list_tasks(USER, "s", 0, 10, None)
    assert [t.id for t in tasks or []] == ["t3", "t1", "t2", "t0"]
    tasks = await store.list_tasks(USER, "s", 0, 2, (5, "t1"))
    assert [t.id for t in tasks or []] == ["t2", "t0"]

    rated = await store.list_feedback(USER, FeedbackFilter(), 10, None)
    assert [f.id for f in rated] == ["f-t0", "f-t1", "f-t2", "f-t3"]
    rated = await store.list_feedback(USER, FeedbackFilter(), 10, (5, "f-t1"))
    assert [f.id for f in rated] == ["f-t2", "f-t3"]
    rated = await store.list_feedback(USER, FeedbackFilter(since=5, until=9), 10, None)
    assert [f.id for f in rated] == ["f-t1", "f-t2"]


async def test_task_and_feedback_identity_rules() -> None:
    store = MemoryStore()
    await store.insert_session(session("s"))
    await store.insert_session(session("s2"))
    await store.insert_session(session("b", user="bob"))
    with pytest.raises(IdConflict):
        await store.insert_session(session("s", user="bob"))

    first = await store.save_task(task("t", "s", at=1))
    assert first is not None
    with pytest.raises(IdConflict):
        await store.save_task(task("t", "s2", at=2))
    # Task ids are per user: bob's "t" is his own, beside alice's.
    bobs = await store.save_task(task("t", "b", user="bob", at=2))
    assert bobs is not None
    assert bobs.session_id == "b"
    updated = await store.save_task(task("t", "s", at=3, bubbles=["new"]))
    assert updated is not None
    assert (updated.created_time, updated.updated_time, updated.message_bubbles) == (1, 3, ["new"])

    # Feedback needs the task in that conversation, and a second one replaces the first.
    assert await store.save_feedback(feedback("x", "s2", "t"), 1) is None
    assert await store.save_feedback(feedback("f1", "s", "t", rating="up"), 1) is not None
    assert await store.save_feedback(feedback("f2", "s", "t", at=2, rating="down"), 2)
    rated = await store.list_feedback(USER, FeedbackFilter(task_id="t"), 10, None)
    assert [(f.id, f.rating) for f in rated] == [("f2", "down")]
    assert await store.list_feedback(USER, FeedbackFilter(rating="up"), 10, None) == []

    assert await store.delete_session(USER, "s", 5) is True
    assert await store.list_feedback(USER, FeedbackFilter(), 10, None) == []
    assert await store.save_task(task("t", "s2", at=6)) is not None


async def test_the_lazy_sweep_keeps_pinned_conversations_and_their_tasks() -> None:
    retention = RetentionConfig(
        task_retention_days=10, feedback_retention_days=0, session_retention_days=30
    )
    store = MemoryStore(retention=retention)
    old = now_ms() - 60 * DAY_MS
    for session_id, pinned in (("kept", True), ("plain", False), ("fresh", False)):
        updated = now_ms() if session_id == "fresh" else old
        await store.insert_session(replace(session(session_id, updated=updated), pinned=pinned))
        for n in range(2):
            assert await store.save_task(task(f"{session_id}-{n}", session_id, at=old)) is not None
    # The next write runs the rules (the first one ran them on an empty store).
    store._next_sweep = store._next_prune = 0
    await store.insert_session(session("trigger", updated=now_ms()))
    ids = {record.id for record in await store.list_sessions(USER, now_ms(), 10, None)}
    assert ids == {"kept", "fresh", "trigger"}  # plain was idle; a pin is never idle
    kept = await store.list_tasks(USER, "kept", now_ms(), 10, None)
    assert [item.id for item in kept or []] == ["kept-0", "kept-1"]  # old, but pinned
    assert await store.list_tasks(USER, "fresh", now_ms(), 10, None) == []


async def test_search_finds_a_task_as_last_saved() -> None:
    """A task's search text is made on its first search and made again after a save."""
    store = MemoryStore()
    await store.insert_session(session("s"))
    alpha = replace(task("t", "s", at=5), user_message="alpha release")
    await store.save_task(alpha)
    query = SearchQuery("alpha", ("alpha",))
    hits = await store.search(USER, query, 10, 10, None)
    assert [(hit.task_id, hit.text, hit.rank, hit.time) for hit in hits] == [
        ("t", "alpha release", 1.0, 5)
    ]
    await store.save_task(replace(alpha, user_message="beta", updated_time=6))
    assert await store.search(USER, query, 10, 10, None) == []
    found = await store.search(USER, SearchQuery("beta", ("beta",)), 10, 10, None)
    assert [(hit.task_id, hit.text, hit.time) for hit in found] == [("t", "beta", 5)]
    # Another user's identical text is never read into a match.
    await store.insert_session(session("b", user="bob"))
    await store.save_task(replace(task("t", "b", user="bob"), user_message="beta"))
    assert [hit.session_id for hit in found] == ["s"]
    assert len(await store.search("bob", SearchQuery("beta", ("beta",)), 10, 10, None)) == 1
