"""MemoryStore: the default, process-local ``Store``, bounded and TTL-aware.

It behaves exactly like the SQL tables of DESIGN §4 (global ids, cascading
deletes, one feedback per task and user, optimistic state versions), but lives in
one process: nothing survives a restart and nothing is shared between instances.
"""

from __future__ import annotations

import heapq
import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from agentsession.errors import IdConflict
from agentsession.stores.base import FeedbackFilter, FeedbackRecord, SessionRecord, TaskRecord

__all__ = ["DEFAULT_MAX_SESSIONS", "MemoryStore"]

#: How many conversations a ``MemoryStore`` keeps by default.
DEFAULT_MAX_SESSIONS = 10_000


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class _Task:
    """A stored chat task; its JSON values are kept as text so no caller can reach them."""

    id: str
    session_id: str
    user_id: str
    user_message: str | None
    message_bubbles: str
    task_metadata: str
    created_time: int
    updated_time: int

    def record(self) -> TaskRecord:
        return TaskRecord(
            id=self.id,
            session_id=self.session_id,
            user_id=self.user_id,
            user_message=self.user_message,
            message_bubbles=json.loads(self.message_bubbles),
            task_metadata=json.loads(self.task_metadata),
            created_time=self.created_time,
            updated_time=self.updated_time,
        )


@dataclass(slots=True)
class _Conversation:
    """A stored conversation with its state, tasks and feedback (its cascade)."""

    record: SessionRecord
    state: str = "{}"
    version: int = 0
    tasks: dict[str, _Task] = field(default_factory=dict)
    feedback: dict[tuple[str, str], FeedbackRecord] = field(default_factory=dict)

    def live(self, now: int) -> bool:
        expires_at = self.record.expires_at
        return expires_at is None or expires_at > now


def _newest_after(key: tuple[int, str], after: tuple[int, str] | None) -> bool:
    """Whether ``key`` sorts strictly after ``after`` in (time desc, id asc) order."""
    return after is None or key[0] < after[0] or (key[0] == after[0] and key[1] > after[1])


def _idle(conversation: _Conversation, idle_before: int, tasks_before: int | None) -> bool:
    """Not updated, viewed, nor a (kept) task saved since ``idle_before``."""
    record = conversation.record
    active_since = idle_before if tasks_before is None else max(idle_before, tasks_before)
    return (
        record.updated_time < idle_before
        and (record.last_viewed_at is None or record.last_viewed_at < idle_before)
        and not any(task.updated_time >= active_since for task in conversation.tasks.values())
    )


def _newest_first(key: tuple[int, str]) -> tuple[int, str]:
    return (-key[0], key[1])


class MemoryStore:
    """A ``Store`` kept in this process's memory: the default backend.

    Bounded: at most ``max_sessions`` conversations are kept. Adding one more evicts
    the least recently used conversation (written or read by id), with its tasks
    and feedback. Expired conversations are invisible at once and deleted by
    ``sweep`` (or by eviction). Every method runs without awaiting, so each is
    atomic on the event loop. ``close()`` keeps the data.
    """

    def __init__(self, *, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if type(max_sessions) is not int or max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive int, not {max_sessions!r}")
        self.max_sessions = max_sessions
        # Least recently used first.
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        # user id -> that user's conversation ids (an ordered set).
        self._by_user: dict[str, dict[str, None]] = {}
        # task id -> the id of its conversation (task ids are global).
        self._task_home: dict[str, str] = {}

    async def start(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release; the data is kept, so the store may be started again."""

    # Retention

    async def sweep(self, now: int) -> int:
        """Delete the conversations expired at ``now`` (with their children); how many."""
        expired = [key for key, value in self._conversations.items() if not value.live(now)]
        for session_id in expired:
            self._remove(session_id)
        return len(expired)

    async def prune(
        self,
        now: int,
        *,
        tasks_before: int | None,
        feedback_before: int | None,
        idle_before: int | None,
        dry_run: bool = False,
    ) -> dict[str, int]:
        """The retention rules of the SQL store, in its order; what each rule deleted.

        Tasks updated before ``tasks_before`` (with their feedback), then feedback
        created before ``feedback_before``, expired conversations, and conversations
        idle since ``idle_before`` (None: the rule is off). ``dry_run`` counts only.
        """
        counts = dict.fromkeys(("chat_tasks", "feedback", "expired_sessions", "idle_sessions"), 0)
        doomed: list[str] = []
        for session_id, conversation in self._conversations.items():
            tasks, feedback = conversation.tasks, conversation.feedback
            old = set()
            if tasks_before is not None:
                old = {key for key, task in tasks.items() if task.updated_time < tasks_before}
            stale = []
            if feedback_before is not None:
                stale = [
                    pair
                    for pair, item in feedback.items()
                    if item.created_time < feedback_before and item.task_id not in old
                ]
            counts["chat_tasks"] += len(old)
            counts["feedback"] += len(stale)
            if not conversation.live(now):
                counts["expired_sessions"] += 1
                doomed.append(session_id)
            elif idle_before is not None and _idle(conversation, idle_before, tasks_before):
                counts["idle_sessions"] += 1
                doomed.append(session_id)
            if dry_run:
                continue
            for task_id in old:
                del tasks[task_id], self._task_home[task_id]
            for pair in [*stale, *(pair for pair in feedback if pair[0] in old)]:
                del feedback[pair]
        if not dry_run:
            for session_id in doomed:
                self._remove(session_id)
        return counts

    # Internals

    def _live(self, user_id: str, session_id: str, now: int) -> _Conversation | None:
        """The user's live conversation, marked as recently used; else None."""
        conversation = self._conversations.get(session_id)
        if conversation is None or conversation.record.user_id != user_id:
            return None
        if not conversation.live(now):
            return None
        self._conversations.move_to_end(session_id)
        return conversation

    def _remove(self, session_id: str) -> None:
        """Delete a conversation with its tasks and feedback."""
        conversation = self._conversations.pop(session_id)
        user_id = conversation.record.user_id
        owned = self._by_user[user_id]
        del owned[session_id]
        if not owned:
            del self._by_user[user_id]
        for task_id in conversation.tasks:
            del self._task_home[task_id]

    # Conversations

    async def insert_session(self, record: SessionRecord) -> None:
        """Add a conversation (state ``{}``, version 0), evicting the LRU one if full."""
        if record.id in self._conversations:
            raise IdConflict("session_id", record.id)
        while len(self._conversations) >= self.max_sessions:
            self._remove(next(iter(self._conversations)))
        self._conversations[record.id] = _Conversation(record)
        self._by_user.setdefault(record.user_id, {})[record.id] = None

    async def get_session(self, user_id: str, session_id: str, now: int) -> SessionRecord | None:
        """The user's live conversation, or None."""
        conversation = self._live(user_id, session_id, now)
        return None if conversation is None else conversation.record

    async def list_sessions(
        self, user_id: str, now: int, limit: int, after: tuple[int, str] | None
    ) -> list[SessionRecord]:
        """The user's live conversations after ``after``, newest first."""
        conversations = self._conversations
        candidates = (
            conversation.record
            for conversation in (conversations[key] for key in self._by_user.get(user_id, ()))
            if conversation.live(now) and _newest_after(conversation.record.sort_key, after)
        )
        return heapq.nsmallest(limit, candidates, key=lambda r: _newest_first(r.sort_key))

    async def update_session(
        self,
        user_id: str,
        session_id: str,
        now: int,
        expires_at: int | None,
        *,
        name: str | None = None,
        rename: bool = False,
        viewed: bool = False,
    ) -> SessionRecord | None:
        """Set ``expires_at`` (and the name, or the view time) of a live conversation."""
        conversation = self._live(user_id, session_id, now)
        if conversation is None:
            return None
        record = replace(conversation.record, expires_at=expires_at)
        if rename:
            record = replace(record, name=name, updated_time=now)
        if viewed:
            record = replace(record, last_viewed_at=now)
        conversation.record = record
        return record

    async def delete_session(self, user_id: str, session_id: str, now: int) -> bool:
        """Delete a live conversation with its tasks and feedback; False if missing."""
        if self._live(user_id, session_id, now) is None:
            return False
        self._remove(session_id)
        return True

    # State

    async def load_state(self, user_id: str, session_id: str, now: int) -> tuple[str, int] | None:
        """The conversation's state JSON text and version, or None if missing."""
        conversation = self._live(user_id, session_id, now)
        return None if conversation is None else (conversation.state, conversation.version)

    async def write_state(
        self,
        user_id: str,
        session_id: str,
        now: int,
        expires_at: int | None,
        state_json: str,
        version: int,
    ) -> bool | None:
        """Replace the state if still at ``version``: True; False if it moved on."""
        conversation = self._live(user_id, session_id, now)
        if conversation is None:
            return None
        if conversation.version != version:
            return False
        conversation.state = state_json
        conversation.version += 1
        conversation.record = replace(conversation.record, updated_time=now, expires_at=expires_at)
        return True

    # Chat tasks

    async def save_task(self, record: TaskRecord) -> TaskRecord | None:
        """Insert or update the task; None if its conversation is missing."""
        # The service passes created_time == updated_time == now.
        conversation = self._live(record.user_id, record.session_id, record.updated_time)
        if conversation is None:
            return None
        home = self._task_home.get(record.id)
        if home is not None:
            existing = self._conversations[home].tasks[record.id]
            if existing.user_id != record.user_id or existing.session_id != record.session_id:
                raise IdConflict("task_id", record.id)
        bubbles, metadata = _dump(record.message_bubbles), _dump(record.task_metadata)
        task = conversation.tasks.get(record.id)
        if task is None:
            task = _Task(
                id=record.id,
                session_id=record.session_id,
                user_id=record.user_id,
                user_message=record.user_message,
                message_bubbles=bubbles,
                task_metadata=metadata,
                created_time=record.created_time,
                updated_time=record.updated_time,
            )
            conversation.tasks[record.id] = task
            self._task_home[record.id] = record.session_id
        else:
            task.user_message = record.user_message
            task.message_bubbles = bubbles
            task.task_metadata = metadata
            task.updated_time = record.updated_time
        return task.record()

    async def list_tasks(
        self, user_id: str, session_id: str, now: int, limit: int, after: tuple[int, str] | None
    ) -> list[TaskRecord] | None:
        """The conversation's tasks after ``after``, oldest first; None if missing."""
        conversation = self._live(user_id, session_id, now)
        if conversation is None:
            return None
        tasks = (
            task
            for task in conversation.tasks.values()
            if after is None or (task.created_time, task.id) > after
        )
        page = heapq.nsmallest(limit, tasks, key=lambda task: (task.created_time, task.id))
        return [task.record() for task in page]

    # Feedback

    async def save_feedback(self, record: FeedbackRecord, now: int) -> FeedbackRecord | None:
        """Add the user's feedback on a task of a live conversation, replacing theirs."""
        conversation = self._live(record.user_id, record.session_id, now)
        if conversation is None:
            return None
        task = conversation.tasks.get(record.task_id)
        if task is None or task.user_id != record.user_id:
            return None
        conversation.feedback[(record.task_id, record.user_id)] = record
        return record

    async def list_feedback(
        self, user_id: str, where: FeedbackFilter, limit: int, after: tuple[int, str] | None
    ) -> list[FeedbackRecord]:
        """The user's feedback matching ``where`` after ``after``, newest first.

        Like the SQL store (this call has no ``now``), feedback of an expired
        conversation is listed until the conversation is swept.
        """
        if where.session_id is not None:
            session_ids: list[str] = [where.session_id]
        else:
            session_ids = list(self._by_user.get(user_id, ()))
        matches: list[FeedbackRecord] = []
        for session_id in session_ids:
            conversation = self._conversations.get(session_id)
            if conversation is None:
                continue
            for item in conversation.feedback.values():
                if (
                    item.user_id == user_id
                    and (where.task_id is None or item.task_id == where.task_id)
                    and (where.rating is None or item.rating == where.rating)
                    and (where.since is None or item.created_time >= where.since)
                    and (where.until is None or item.created_time < where.until)
                    and _newest_after(item.sort_key, after)
                ):
                    matches.append(item)
        return heapq.nsmallest(limit, matches, key=lambda item: _newest_first(item.sort_key))
