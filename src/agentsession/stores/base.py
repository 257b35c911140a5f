"""The Store contract every backend honours, and the records it returns.

A store is the storage half of ``SessionService``: it reads and writes rows and does
nothing else. The service validates input, makes ids, reads the clock, applies the
TTL and encodes cursors, then calls one store method, so every backend sees the same
well-formed calls and must give the same answers (the service test suite runs against
each). Times are epoch milliseconds. ``now`` is passed in, never read by a store, so
that one call sees one instant.

Rules every method follows:

* Ownership: a row is visible only to the ``user_id`` it was written with. A
  conversation of another user, or one whose ``expires_at`` is at or before ``now``,
  is treated exactly like a missing one, and is never changed. (``list_feedback``
  takes no ``now``: feedback of an expired conversation stays listed until the
  retention job deletes the conversation.)
* Keyset pages: ``after`` is the sort key of the last item of the previous page (or
  None for the first page); a method returns at most ``limit`` items that sort
  strictly after it. Conversations sort newest first, by ``(updated_time desc, id)``;
  chat tasks oldest first, by ``(created_time, id)``, or on request newest first by
  the exact reverse, ``(created_time desc, id desc)``; feedback newest first, by
  ``(created_time desc, id)``.
* Failures of the backend itself raise ``StoreUnavailable``.
* Retention is part of the contract (as ``clear_expired`` is of Django's session
  backends): ``prune_batch`` deletes one batch of one rule, ``count_prunable`` counts
  for a dry run, and the ``*_lease`` methods keep one pruning instance at a time.
  ``agentsession.retention`` drives them and knows no backend by name.
* Stores that need a running asyncio loop (SQLAlchemy's async engine does) say so
  with ``requires_asyncio = True``; the others run on any anyio backend.
* Revocation (``revoke``, ``list_revocations``) lets signed cookies be logged out
  without server-side sessions: the store keeps, per client id and per user id, the
  time before which every session of it is void; each process polls the list into
  an in-process cache (``agentsession.revocation``).
* A user's data (``export_sessions``, ``export_tasks``, ``list_feedback``,
  ``import_rows``, ``erase_batch``): every row of one user, expired conversations
  included, paged for a streamed export, loaded all-or-nothing, erased in batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from agentsession.common import DAY_MS

if TYPE_CHECKING:
    from agentsession.config import RetentionConfig

__all__ = [
    "REVOCATION_KINDS",
    "RULES",
    "Cutoffs",
    "FeedbackFilter",
    "FeedbackRecord",
    "Holder",
    "Page",
    "Revocation",
    "SearchHit",
    "SearchKey",
    "SearchQuery",
    "SessionRecord",
    "Store",
    "StoredSession",
    "TaskRecord",
    "Touch",
    "UserRows",
    "newest_after",
    "search_after",
]

T = TypeVar("T")

#: The retention rules in the order they run; each name is also a ``PruneReport`` field.
RULES = ("chat_tasks", "feedback", "expired_sessions", "idle_sessions")
#: What a revocation names: one client (a browser or token client) or one user id.
REVOCATION_KINDS = ("client", "user")


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """What is old, in epoch ms: rows strictly before a cutoff go; None keeps them all.

    ``chat_tasks``: tasks not updated since ``tasks`` (their feedback goes with them).
    ``feedback``: feedback created before ``feedback``. ``expired_sessions``:
    conversations whose ``expires_at`` is at or before ``now``. ``idle_sessions``:
    live conversations not updated, viewed, nor given a task since ``idle``. A pinned
    conversation is never idle, and its tasks are never old.
    """

    now: int
    tasks: int | None
    feedback: int | None
    idle: int | None

    @classmethod
    def from_retention(cls, retention: RetentionConfig, now: int) -> Cutoffs:
        """The cutoffs of a ``data_retention`` configuration at ``now`` (0 days: off)."""

        def before(days: int) -> int | None:
            return None if days == 0 else now - days * DAY_MS

        return cls(
            now=now,
            tasks=before(retention.task_retention_days),
            feedback=before(retention.feedback_retention_days),
            idle=before(retention.session_retention_days),
        )

    def enabled(self, rule: str) -> bool:
        """Whether ``rule`` deletes anything with these cutoffs."""
        if rule == "chat_tasks":
            return self.tasks is not None
        if rule == "feedback":
            return self.feedback is not None
        if rule == "idle_sessions":
            return self.idle is not None
        return True


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds (or last held) a lease, and until when (epoch ms)."""

    owner: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One conversation (a row of ``sessions``), without its state."""

    id: str
    user_id: str
    client_id: str | None
    name: str | None
    agent_id: str | None
    created_time: int
    updated_time: int
    last_viewed_at: int | None
    expires_at: int | None
    #: Kept out of retention's idle and chat-task rules; ``list_sessions(pinned=...)``
    #: lists pinned (or unpinned) conversations only.
    pinned: bool = False

    @property
    def sort_key(self) -> tuple[int, str]:
        """Its place in ``list_sessions``: newest ``updated_time`` first, then ``id``."""
        return (self.updated_time, self.id)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One chat task (a user message and the agent's reply bubbles) of a conversation."""

    id: str
    session_id: str
    user_id: str
    user_message: str | None
    message_bubbles: Any
    task_metadata: Any
    created_time: int
    updated_time: int

    @property
    def sort_key(self) -> tuple[int, str]:
        """Its place in ``list_tasks``: oldest ``created_time`` first, then ``id``."""
        return (self.created_time, self.id)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A user's rating (``up`` or ``down``) of one chat task."""

    id: str
    session_id: str
    task_id: str
    user_id: str
    rating: str
    comment: str | None
    created_time: int

    @property
    def sort_key(self) -> tuple[int, str]:
        """Its place in ``list_feedback``: newest ``created_time`` first, then ``id``."""
        return (self.created_time, self.id)


@dataclass(frozen=True, slots=True)
class Touch:
    """What saving a task also writes to its conversation, in the same atomic write:
    the new ``expires_at`` (activity slides the TTL) and, with ``viewed``, the view time."""

    expires_at: int | None
    viewed: bool = False


@dataclass(frozen=True, slots=True)
class FeedbackFilter:
    """Which of a user's feedback ``list_feedback`` returns; None means any.

    ``since`` is inclusive and ``until`` exclusive, both epoch milliseconds on
    ``created_time``.
    """

    session_id: str | None = None
    task_id: str | None = None
    rating: str | None = None
    since: int | None = None
    until: int | None = None

    def matches(self, item: FeedbackRecord, after: tuple[int, str] | None = None) -> bool:
        """Whether ``item`` passes these filters and sorts after ``after`` (newest first):
        for stores that filter in Python."""
        return (
            (self.session_id is None or item.session_id == self.session_id)
            and (self.task_id is None or item.task_id == self.task_id)
            and (self.rating is None or item.rating == self.rating)
            and (self.since is None or item.created_time >= self.since)
            and (self.until is None or item.created_time < self.until)
            and newest_after(item.sort_key, after)
        )


def newest_after(key: tuple[int, str], after: tuple[int, str] | None) -> bool:
    """Whether ``key`` sorts strictly after ``after`` in (time desc, id asc) order."""
    return after is None or key[0] < after[0] or (key[0] == after[0] and key[1] > after[1])


#: A search hit's place: ``(group, rank, time, id)``; see ``SearchHit.sort_key``.
SearchKey = tuple[int, float, int, str]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to search for: ``terms``, casefolded words (``agentsession.search.words``).

    A task matches when its document (``agentsession.search.document``: the user
    message and the text of its bubbles) has, for every term, a word that starts with
    it; a conversation matches when its name does. ``text`` is the query as given.
    """

    text: str
    terms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One match of ``Store.search``: a conversation's name, or one of its tasks.

    ``task_id`` is None for a name match. ``text`` is what matched: the name, or the
    task's document. ``rank``: the store's relevance, higher first, only compared
    within one store (a word repeated ranks higher). ``time``: the task's
    ``created_time``, or the conversation's ``updated_time`` for a name match.
    """

    session_id: str
    session_name: str | None
    task_id: str | None
    text: str
    rank: float
    time: int

    @property
    def group(self) -> int:
        """0 for a name match (listed first), 1 for a task."""
        return 0 if self.task_id is None else 1

    @property
    def sort_key(self) -> SearchKey:
        """Its place in ``search``: name matches first, then by rank (highest first),
        time (newest first), and the task's id (the conversation's for a name match)."""
        return (
            self.group,
            self.rank,
            self.time,
            self.session_id if self.task_id is None else self.task_id,
        )


def search_after(key: SearchKey, after: SearchKey | None) -> bool:
    """Whether ``key`` sorts strictly after ``after`` in search order: for stores that
    rank in Python."""
    if after is None:
        return True
    return (key[0], -key[1], -key[2], key[3]) > (after[0], -after[1], -after[2], after[3])


@dataclass(frozen=True, slots=True)
class Revocation:
    """Sessions of ``subject`` issued at or before ``revoked_at`` (epoch ms) are void.

    ``kind`` is ``"client"`` (``subject`` is a client id: one browser or token client,
    and every copy of its cookie) or ``"user"`` (a user id: every client bound to it).
    ``keep_until``: after this instant (epoch ms) no cookie issued before
    ``revoked_at`` can still be valid (its ``max_age`` ran out), so a store may forget
    the revocation; None keeps it for good.
    """

    kind: str
    subject: str
    revoked_at: int
    keep_until: int | None

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Its place in ``list_revocations``: oldest ``revoked_at`` first, then kind, subject."""
        return (self.revoked_at, self.kind, self.subject)


@dataclass(frozen=True, slots=True)
class StoredSession:
    """One conversation exactly as stored: its record, state JSON text and state version."""

    record: SessionRecord
    state_json: str
    version: int


@dataclass(frozen=True, slots=True)
class UserRows:
    """Rows of one user to load with ``Store.import_rows``, parents first.

    Every record's ``user_id`` is ``user_id``; every task's and feedback's
    ``session_id`` is one of ``sessions``; every feedback's ``task_id`` is one of
    ``tasks`` of that conversation (the service checks this before calling).
    """

    user_id: str
    sessions: list[StoredSession]
    tasks: list[TaskRecord]
    feedback: list[FeedbackRecord]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next (None: no more)."""

    items: list[T]
    next_cursor: str | None


class Store(Protocol):
    """What ``SessionService`` needs from a backend. See the module docstring for rules."""

    #: True when the store only runs on asyncio (a SQL configuration under trio is
    #: refused at startup with a ``ConfigError``).
    requires_asyncio: bool
    #: True when the store applies retention itself as it is used (the memory store's
    #: lazy sweep), so no ``RetentionScheduler`` runs for it.
    prunes_lazily: bool

    async def start(self) -> None:
        """Make the store ready (the SQL store migrates its schema to head)."""
        ...

    async def close(self) -> None:
        """Release connections; the store may be started again afterwards."""
        ...

    async def ping(self) -> None:
        """One cheap round trip to the backend (a health check); returns when it answers.

        Raises ``StoreUnavailable`` when the backend cannot be reached.
        """
        ...

    # Conversations

    async def insert_session(self, record: SessionRecord) -> None:
        """Add a conversation with empty state (``{}``) and version 0.

        Raises ``IdConflict("session_id", id)``, writing nothing, when a conversation
        with ``record.id`` already exists (whoever owns it, expired or not).
        """
        ...

    async def get_session(self, user_id: str, session_id: str, now: int) -> SessionRecord | None:
        """The user's live conversation, or None."""
        ...

    async def list_sessions(
        self,
        user_id: str,
        now: int,
        limit: int,
        after: tuple[int, str] | None,
        *,
        pinned: bool | None = None,
    ) -> list[SessionRecord]:
        """The user's live conversations after ``after``, newest first.

        ``pinned``: True lists only pinned conversations, False only the others,
        None every one (pinned ones at their usual place).
        """
        ...

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
        """Touch a live conversation and return it as it now is, or None if missing.

        Always sets ``expires_at``. ``rename`` sets ``name`` (None clears it) and
        ``updated_time = now``; ``viewed`` sets ``last_viewed_at = now``; ``pinned``,
        when not None, sets ``pinned`` (and leaves ``updated_time`` as it is).
        """
        ...

    async def delete_session(self, user_id: str, session_id: str, now: int) -> bool:
        """Delete a live conversation with its tasks and feedback; False if missing."""
        ...

    # State: one JSON document per conversation, versioned for optimistic writes.

    async def load_state(self, user_id: str, session_id: str, now: int) -> tuple[str, int] | None:
        """The conversation's state JSON text and its version, or None if missing."""
        ...

    async def write_state(
        self,
        user_id: str,
        session_id: str,
        now: int,
        expires_at: int | None,
        state_json: str,
        version: int,
    ) -> bool | None:
        """Replace the state if its version is still ``version``; bump the version.

        Also sets ``updated_time = now`` and ``expires_at``. Returns True when
        written, False when the version moved on (reload and retry), None when the
        conversation is missing.
        """
        ...

    # Chat tasks

    async def save_task(self, record: TaskRecord, touch: Touch | None = None) -> TaskRecord | None:
        """Insert the task, or update the user's task ``record.id``, atomically.

        On update, ``user_message``, ``message_bubbles``, ``task_metadata`` and
        ``updated_time`` are replaced and ``created_time`` is kept. With ``touch``, the
        conversation's ``expires_at`` is set in the same atomic write (and, with
        ``touch.viewed``, its ``last_viewed_at`` becomes ``record.updated_time``): all
        of it is written or none. Task ids are per user: another user's task with
        the same id is neither touched nor seen. Returns the task as stored, or None
        when its conversation is missing (also when it is deleted meanwhile). Raises
        ``IdConflict("task_id", id)``, writing nothing, when the user already has a
        task ``record.id`` in another conversation.
        """
        ...

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
        """The conversation's tasks after ``after``, oldest first; None if it is missing.

        ``newest_first``: the exact reverse order, ``(created_time desc, id desc)``, and
        ``after`` counts in it (the tasks older than that key): an agent's latest turns,
        then older pages, each one query on the same index.
        """
        ...

    # Search

    async def search(
        self, user_id: str, query: SearchQuery, now: int, limit: int, after: SearchKey | None
    ) -> list[SearchHit]:
        """The user's matches of ``query`` by ``SearchHit.sort_key``, strictly after
        ``after``: at most ``limit``.

        Matches are the user's live conversations whose name matches, then the tasks
        of the user's live conversations whose document matches (see ``SearchQuery``).
        Another user's rows are never read into a match; a deleted or pruned task is
        never found. SQL stores use a full-text index kept by the write path; the
        others scan the user's own data.
        """
        ...

    # Feedback

    async def save_feedback(self, record: FeedbackRecord, now: int) -> FeedbackRecord | None:
        """Add the user's feedback on a task, replacing their earlier one (id included).

        None, writing nothing, when the task is not the user's, is not in
        ``record.session_id``, or that conversation is missing (also when it is
        deleted meanwhile).
        """
        ...

    async def list_feedback(
        self, user_id: str, where: FeedbackFilter, limit: int, after: tuple[int, str] | None
    ) -> list[FeedbackRecord]:
        """The user's feedback matching ``where`` after ``after``, newest first."""
        ...

    # Retention: one batch at a time, so the caller paces the work and can stop.

    async def prune_batch(
        self, rule: str, cut: Cutoffs, position: object | None, limit: int
    ) -> tuple[int, object | None]:
        """Delete up to ``limit`` rows that ``rule`` finds old, oldest first.

        ``position`` is None for the first batch, then what the previous call
        returned. Returns the rows deleted (a conversation's tasks and feedback go
        with it uncounted, as do a task's feedback) and the position of the next
        batch, or None when the rule has nothing left.
        """
        ...

    async def count_prunable(self, rule: str, cut: Cutoffs) -> int:
        """How many rows ``rule`` would delete after the rules before it ran (dry run)."""
        ...

    async def take_lease(self, name: str, owner: str, expires_at: int, now: int) -> bool:
        """Take or renew lease ``name`` for ``owner`` until ``expires_at``, atomically.

        True when the lease was free, expired at ``now``, or already ``owner``'s.
        """
        ...

    async def release_lease(self, name: str, owner: str, now: int) -> None:
        """Let the lease go (it expires at ``now``) if ``owner`` still holds it."""
        ...

    async def lease_holder(self, name: str) -> Holder | None:
        """Who holds or last held lease ``name``; None if nobody ever did."""
        ...

    # Revocation: a revocation time per client id and per user id.

    async def revoke(self, revocation: Revocation, now: int) -> None:
        """Record ``revocation``, atomically, and make it visible to ``list_revocations``.

        Where one of the same ``(kind, subject)`` is stored, the later ``revoked_at``
        and the later ``keep_until`` (None is latest) are kept, so a revocation never
        moves back in time. May also delete revocations whose ``keep_until`` is before
        ``now`` (any number, at the store's pace: they void nothing any more).
        """
        ...

    async def list_revocations(
        self, since: int, now: int, limit: int, after: tuple[int, str, str] | None
    ) -> list[Revocation]:
        """Revocations with ``revoked_at >= since``, by ``sort_key``, strictly after
        ``after``: at most ``limit``. Those whose ``keep_until`` is before ``now`` may be
        left out. A revocation recorded again with a later time is listed (once) at
        its new place: the cache polls with ``since`` a little in the past.
        """
        ...

    # A user's data: export in pages, import all-or-nothing, erase in batches.

    async def export_sessions(
        self, user_id: str, limit: int, after: str | None
    ) -> list[StoredSession]:
        """Every conversation of the user, expired ones included, ordered by id, with
        an id strictly greater than ``after``: at most ``limit``."""
        ...

    async def export_tasks(
        self, user_id: str, session_id: str, limit: int, after: tuple[int, str] | None
    ) -> list[TaskRecord]:
        """The user's tasks of conversation ``session_id`` (expired or not), oldest
        first by ``(created_time, id)``, strictly after ``after``: at most ``limit``.
        Empty when the conversation is missing or another user's.

        (A user's feedback is exported with ``list_feedback`` and an empty filter:
        it already lists expired conversations' feedback.)
        """
        ...

    async def import_rows(self, rows: UserRows) -> None:
        """Insert every row of ``rows`` with its ids, times, state and version kept,
        all or nothing: on any failure nothing is written.

        Raises ``IdConflict`` (writing nothing) naming the first id found taken:
        ``("session_id", id)`` when a conversation with that id exists (whoever owns
        it), ``("task_id", id)`` when the user already has a task with that id,
        ``("feedback_id", id)`` when a feedback row with that id exists.
        """
        ...

    async def erase_batch(self, user_id: str, limit: int) -> int:
        """Delete up to about ``limit`` rows of the user in one short atomic step, and
        return how many went; 0 means the user has no rows left.

        Children go before parents (feedback, then chat tasks, then conversations,
        expired ones included), so each step stays small however large one
        conversation is. No other user's row is read or changed. Revocations are not
        rows of the user: they stay.
        """
        ...
