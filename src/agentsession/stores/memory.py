"""MemoryStore: the default, process-local ``Store``, bounded and TTL-aware.

It behaves exactly like the SQL tables (README: Persistence) (global ids, cascading
deletes, one feedback per task and user, optimistic state versions), but lives in
one process: nothing survives a restart and nothing is shared between instances.
It never awaits and starts no task, so it runs on any anyio backend (asyncio, trio);
expired conversations and the retention rules are swept lazily, by the writes.

Search is a scan of the user's own conversations and their tasks (no index): its cost
is O(the user's tasks + the size of their text), and no other user's row is looked at.
A task's searchable document is made on its first search and kept until it changes.
"""

from __future__ import annotations

import heapq
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from agentsession.common import dump_json, now_ms
from agentsession.config import RetentionConfig
from agentsession.errors import IdConflict
from agentsession.search import document, occurrences
from agentsession.stores.base import (
    RULES,
    Cutoffs,
    FeedbackFilter,
    FeedbackRecord,
    Holder,
    Revocation,
    SearchHit,
    SearchKey,
    SearchQuery,
    SessionRecord,
    StoredSession,
    TaskRecord,
    Touch,
    UserRows,
    newest_after,
    search_after,
)
from agentsession.stores.scan import name_hit, search_order

__all__ = ["DEFAULT_MAX_SESSIONS", "MemoryStore"]

#: How many conversations a ``MemoryStore`` keeps by default.
DEFAULT_MAX_SESSIONS = 10_000
#: Milliseconds between two lazy sweeps of expired conversations.
SWEEP_INTERVAL_MS = 60_000


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
    #: Its search document and that casefolded, made by the first search after it was
    #: written (None until then, and again after each save).
    text: str | None = None
    folded: str = ""

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

    def document(self) -> str:
        """Its searchable text (``agentsession.search.document``), made once."""
        if self.text is None:
            self.text = document(self.user_message, json.loads(self.message_bubbles))
            self.folded = self.text.casefold()
        return self.text

    def match(self, terms: tuple[str, ...]) -> int:
        """``occurrences(terms, document)``; 0 at once when a term is nowhere in it (a
        word starting with a term holds it, casefolded)."""
        text = self.document()
        if not all(term in self.folded for term in terms):
            return 0
        return occurrences(terms, text)


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


def _hits(conversation: _Conversation, terms: tuple[str, ...]) -> Iterable[SearchHit]:
    """The conversation's name match (if any), then its matching tasks."""
    record = conversation.record
    name = record.name
    if (hit := name_hit(record, terms)) is not None:
        yield hit
    for task in conversation.tasks.values():
        rank = task.match(terms)
        if rank:
            yield SearchHit(
                record.id, name, task.id, task.document(), float(rank), task.created_time
            )


class MemoryStore:
    """A ``Store`` kept in this process's memory: the default backend.

    Bounded: at most ``max_sessions`` conversations are kept. Adding one more evicts
    the least recently used conversation (written or read by id), with its tasks
    and feedback. Expired conversations are invisible at once; a write deletes them
    once a minute at most (``sweep``), and, given ``retention``, runs its rules once
    per ``cleanup_interval_hours`` the same way (the first write runs them): no
    background task. Every method runs without awaiting, so each is atomic on the
    event loop. ``close()`` keeps the data.
    """

    #: Plain Python: any anyio backend.
    requires_asyncio = False
    #: The writes sweep (``_maintain``): no scheduler, no task.
    prunes_lazily = True

    def __init__(
        self, *, max_sessions: int = DEFAULT_MAX_SESSIONS, retention: RetentionConfig | None = None
    ) -> None:
        if type(max_sessions) is not int or max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive int, not {max_sessions!r}")
        self.max_sessions = max_sessions
        #: The rules the writes apply lazily (None, or ``enabled: false``: only expiry).
        self.retention = retention if retention is not None and retention.enabled else None
        self._next_sweep = 0
        self._next_prune = 0
        self._leases: dict[str, Holder] = {}
        # Least recently used first.
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        # user id -> that user's conversation ids (an ordered set).
        self._by_user: dict[str, dict[str, None]] = {}
        # (user id, task id) -> the id of its conversation (task ids are per user).
        self._task_home: dict[tuple[str, str], str] = {}
        # (kind, subject) -> its revocation.
        self._revocations: dict[tuple[str, str], Revocation] = {}

    async def start(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release; the data is kept, so the store may be started again."""

    async def ping(self) -> None:
        """Always answers: the data is in this process."""

    # Retention: each rule in one pass (there is no lock for a batch to be short for).

    async def sweep(self, now: int) -> int:
        """Delete the conversations expired at ``now`` (with their children); how many."""
        return self._rule("expired_sessions", Cutoffs(now, None, None, None), dry_run=False)

    async def prune_batch(
        self, rule: str, cut: Cutoffs, position: object | None, limit: int
    ) -> tuple[int, object | None]:
        """The whole rule at once: the rows deleted, and None (nothing left)."""
        return self._rule(rule, cut, dry_run=False), None

    async def count_prunable(self, rule: str, cut: Cutoffs) -> int:
        """How many rows ``rule`` would delete after the rules before it."""
        return self._rule(rule, cut, dry_run=True)

    async def take_lease(self, name: str, owner: str, expires_at: int, now: int) -> bool:
        """The lease of this process (one store, one event loop: no race to lose)."""
        holder = self._leases.get(name)
        if holder is not None and holder.owner != owner and holder.expires_at > now:
            return False
        self._leases[name] = Holder(owner, expires_at)
        return True

    async def release_lease(self, name: str, owner: str, now: int) -> None:
        """Expire the lease now if ``owner`` holds it."""
        holder = self._leases.get(name)
        if holder is not None and holder.owner == owner:
            self._leases[name] = Holder(owner, now)

    async def lease_holder(self, name: str) -> Holder | None:
        """Who holds or last held the lease."""
        return self._leases.get(name)

    def _rule(self, rule: str, cut: Cutoffs, *, dry_run: bool) -> int:
        """Apply (or with ``dry_run`` count) one retention rule over every conversation."""
        count = 0
        doomed: list[str] = []
        for session_id, conversation in self._conversations.items():
            tasks, feedback = conversation.tasks, conversation.feedback
            tasks_owner = conversation.record.user_id
            pinned = conversation.record.pinned
            if rule == "chat_tasks":
                assert cut.tasks is not None
                old = (
                    []
                    if pinned
                    else [key for key, task in tasks.items() if task.updated_time < cut.tasks]
                )
                count += len(old)
                if not dry_run and old:
                    for task_id in old:
                        del tasks[task_id], self._task_home[tasks_owner, task_id]
                    gone = set(old)
                    for pair in [pair for pair in feedback if pair[0] in gone]:
                        del feedback[pair]
            elif rule == "feedback":
                assert cut.feedback is not None
                stale = [
                    pair
                    for pair, item in feedback.items()
                    if item.created_time < cut.feedback
                    and (
                        cut.tasks is None or pinned or tasks[item.task_id].updated_time >= cut.tasks
                    )
                ]
                count += len(stale)
                if not dry_run:
                    for pair in stale:
                        del feedback[pair]
            elif rule == "expired_sessions":
                if not conversation.live(cut.now):
                    doomed.append(session_id)
            elif rule == "idle_sessions":
                assert cut.idle is not None
                if (
                    not pinned
                    and conversation.live(cut.now)
                    and _idle(conversation, cut.idle, cut.tasks)
                ):
                    doomed.append(session_id)
        if not dry_run:
            for session_id in doomed:
                self._remove(session_id)
        return count + len(doomed)

    def _maintain(self) -> None:
        """The lazy sweep: called by writes, does work once per interval at most.

        The one place a store reads the clock: housekeeping, not an answer to a call.
        """
        now = now_ms()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_MS
        retention = self.retention
        if retention is not None and now >= self._next_prune:
            self._next_prune = now + int(retention.cleanup_interval_hours * 3_600_000)
            cut = Cutoffs.from_retention(retention, now)
            for rule in RULES:
                if cut.enabled(rule):
                    self._rule(rule, cut, dry_run=False)
        else:
            self._rule("expired_sessions", Cutoffs(now, None, None, None), dry_run=False)

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
            del self._task_home[user_id, task_id]

    # Conversations

    async def insert_session(self, record: SessionRecord) -> None:
        """Add a conversation (state ``{}``, version 0), evicting the LRU one if full."""
        self._maintain()
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
        self,
        user_id: str,
        now: int,
        limit: int,
        after: tuple[int, str] | None,
        *,
        pinned: bool | None = None,
    ) -> list[SessionRecord]:
        """The user's live conversations after ``after``, newest first; with ``pinned``,
        only the pinned (True) or unpinned (False) ones."""
        conversations = self._conversations
        candidates = (
            conversation.record
            for conversation in (conversations[key] for key in self._by_user.get(user_id, ()))
            if conversation.live(now)
            and (pinned is None or conversation.record.pinned == pinned)
            and newest_after(conversation.record.sort_key, after)
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
        pinned: bool | None = None,
    ) -> SessionRecord | None:
        """Set ``expires_at`` (and the name, the view time, or the pin) of a live
        conversation."""
        conversation = self._live(user_id, session_id, now)
        if conversation is None:
            return None
        record = replace(conversation.record, expires_at=expires_at)
        if rename:
            record = replace(record, name=name, updated_time=now)
        if viewed:
            record = replace(record, last_viewed_at=now)
        if pinned is not None:
            record = replace(record, pinned=pinned)
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

    async def save_task(self, record: TaskRecord, touch: Touch | None = None) -> TaskRecord | None:
        """Insert or update the user's task and touch its conversation; None if missing."""
        # The service passes created_time == updated_time == now.
        self._maintain()
        now = record.updated_time
        conversation = self._live(record.user_id, record.session_id, now)
        if conversation is None:
            return None
        home = self._task_home.get((record.user_id, record.id))
        if home is not None and home != record.session_id:
            raise IdConflict("task_id", record.id)
        if touch is not None:
            touched = replace(conversation.record, expires_at=touch.expires_at)
            conversation.record = replace(touched, last_viewed_at=now) if touch.viewed else touched
        bubbles, metadata = dump_json(record.message_bubbles), dump_json(record.task_metadata)
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
            self._task_home[record.user_id, record.id] = record.session_id
        else:
            task.user_message = record.user_message
            task.message_bubbles = bubbles
            task.task_metadata = metadata
            task.updated_time = record.updated_time
            task.text = None
        return task.record()

    async def list_tasks(
        self,
        user_id: str,
        session_id: str,
        now: int,
        limit: int,
        after: tuple[int, str] | None,
        *,
        newest_first: bool = False,
    ) -> list[TaskRecord] | None:
        """The conversation's tasks after ``after``, oldest (or newest) first; None if
        missing."""
        conversation = self._live(user_id, session_id, now)
        if conversation is None:
            return None

        def key(task: _Task) -> tuple[int, str]:
            return (task.created_time, task.id)

        tasks: Iterable[_Task] = conversation.tasks.values()
        if after is not None:  # strictly past ``after`` in the order asked for
            tasks = [t for t in tasks if (key(t) < after if newest_first else key(t) > after)]
        pick = heapq.nlargest if newest_first else heapq.nsmallest
        return [task.record() for task in pick(limit, tasks, key=key)]

    # Search

    async def search(
        self, user_id: str, query: SearchQuery, now: int, limit: int, after: SearchKey | None
    ) -> list[SearchHit]:
        """The user's matches after ``after``, best first: a scan of the user's live
        conversations and their tasks, keeping only the best ``limit`` (a heap)."""
        conversations = self._conversations
        hits = (
            hit
            for conversation in (conversations[key] for key in self._by_user.get(user_id, ()))
            if conversation.live(now)
            for hit in _hits(conversation, query.terms)
            if search_after(hit.sort_key, after)
        )
        return heapq.nsmallest(limit, hits, key=search_order)

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
                if item.user_id == user_id and where.matches(item, after):
                    matches.append(item)
        return heapq.nsmallest(limit, matches, key=lambda item: _newest_first(item.sort_key))

    # Revocation

    async def revoke(self, revocation: Revocation, now: int) -> None:
        """Keep the later time of this and any stored revocation of the same subject."""
        key = (revocation.kind, revocation.subject)
        found = self._revocations.get(key)
        if found is not None:
            keep = found.keep_until
            revocation = Revocation(
                revocation.kind,
                revocation.subject,
                max(found.revoked_at, revocation.revoked_at),
                None
                if keep is None or revocation.keep_until is None
                else max(keep, revocation.keep_until),
            )
        self._revocations[key] = revocation
        forgotten = [
            key
            for key, item in self._revocations.items()
            if item.keep_until is not None and item.keep_until < now
        ]
        for key in forgotten:
            del self._revocations[key]

    async def list_revocations(
        self, since: int, now: int, limit: int, after: tuple[int, str, str] | None
    ) -> list[Revocation]:
        """The kept revocations from ``since`` on, oldest first, after ``after``."""
        matches = (
            item
            for item in self._revocations.values()
            if item.revoked_at >= since
            and (item.keep_until is None or item.keep_until >= now)
            and (after is None or item.sort_key > after)
        )
        return heapq.nsmallest(limit, matches, key=lambda item: item.sort_key)

    # A user's data

    async def export_sessions(
        self, user_id: str, limit: int, after: str | None
    ) -> list[StoredSession]:
        """The user's conversations (expired ones too) by id, after ``after``."""
        ids = heapq.nsmallest(
            limit,
            (key for key in self._by_user.get(user_id, ()) if after is None or key > after),
        )
        found = (self._conversations[key] for key in ids)
        return [StoredSession(item.record, item.state, item.version) for item in found]

    async def export_tasks(
        self, user_id: str, session_id: str, limit: int, after: tuple[int, str] | None
    ) -> list[TaskRecord]:
        """The conversation's tasks (expired or not), oldest first, after ``after``."""
        conversation = self._conversations.get(session_id)
        if conversation is None or conversation.record.user_id != user_id:
            return []
        tasks = (
            task
            for task in conversation.tasks.values()
            if after is None or (task.created_time, task.id) > after
        )
        page = heapq.nsmallest(limit, tasks, key=lambda task: (task.created_time, task.id))
        return [task.record() for task in page]

    async def import_rows(self, rows: UserRows) -> None:
        """Check every id first, then insert everything (no await: nothing in between)."""
        user_id = rows.user_id
        for stored in rows.sessions:
            if stored.record.id in self._conversations:
                raise IdConflict("session_id", stored.record.id)
        for task in rows.tasks:
            if (user_id, task.id) in self._task_home:
                raise IdConflict("task_id", task.id)
        feedback_ids = (
            {
                item.id
                for conversation in self._conversations.values()
                for item in conversation.feedback.values()
            }
            if rows.feedback
            else set()
        )
        for item in rows.feedback:
            if item.id in feedback_ids:
                raise IdConflict("feedback_id", item.id)
        for stored in rows.sessions:
            while len(self._conversations) >= self.max_sessions:
                self._remove(next(iter(self._conversations)))
            self._conversations[stored.record.id] = _Conversation(
                stored.record, stored.state_json, stored.version
            )
            self._by_user.setdefault(user_id, {})[stored.record.id] = None
        for task in rows.tasks:
            self._conversations[task.session_id].tasks[task.id] = _Task(
                id=task.id,
                session_id=task.session_id,
                user_id=user_id,
                user_message=task.user_message,
                message_bubbles=dump_json(task.message_bubbles),
                task_metadata=dump_json(task.task_metadata),
                created_time=task.created_time,
                updated_time=task.updated_time,
            )
            self._task_home[user_id, task.id] = task.session_id
        for item in rows.feedback:
            self._conversations[item.session_id].feedback[(item.task_id, user_id)] = item

    async def erase_batch(self, user_id: str, limit: int) -> int:
        """Delete whole conversations of the user until at least ``limit`` rows went.

        One step never awaits, so a large conversation is as atomic as a small one.
        """
        deleted = 0
        for session_id in list(self._by_user.get(user_id, ())):
            if deleted >= limit:
                break
            conversation = self._conversations[session_id]
            deleted += 1 + len(conversation.tasks) + len(conversation.feedback)
            self._remove(session_id)
        return deleted
