"""SessionService: the async API over conversations, chat tasks, feedback and state.

The service is the one place that validates input, makes ids, reads the clock,
applies the session TTL and encodes page cursors; a ``Store`` (memory or SQL) only
reads and writes rows. Every method takes the caller's ``user_id`` and acts on that
user's rows alone: another user's conversation raises ``SessionNotFound`` exactly as
a missing one does. Bad input raises ``InvalidInput`` naming the field before
anything is written; a backend that is down or slow raises ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from time import perf_counter
from types import TracebackType
from typing import Any, Final, NamedTuple, TypeVar

import anyio
import sniffio

from agentsession.common import (
    ID_LENGTH,
    MAX_JSON_DEPTH,
    MAX_PAGE_SIZE,
    NAME_LENGTH,
    dump_json,
    new_id,
    now_ms,
)
from agentsession.config import AgentSessionConfig, ServiceConfig
from agentsession.errors import (
    ConfigError,
    InvalidInput,
    SessionNotFound,
    StoreMisconfigured,
    StoreUnavailable,
)
from agentsession.metrics import Metrics, get_metrics, operation_name, outcome_of
from agentsession.search import parse_query, snippet
from agentsession.stores.base import (
    FeedbackFilter,
    FeedbackRecord,
    Page,
    Revocation,
    SearchHit,
    SearchKey,
    SearchQuery,
    SessionRecord,
    Store,
    TaskRecord,
    Touch,
)

__all__ = ["RATINGS", "SearchResult", "SessionService", "SessionState", "UserCounts"]

T = TypeVar("T")
logger = logging.getLogger("agentsession.service")

#: The ratings ``add_feedback`` accepts.
RATINGS: Final = ("up", "down")
#: How often a state write is retried after losing a race to another writer.
STATE_WRITE_ATTEMPTS: Final = 100
_DELETE: Final = object()


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One result of ``SessionService.search``: a conversation whose name matched
    (``task_id`` None), or one of its chat tasks.

    ``snippet``: a passage of what matched as ``(text, matched)`` parts, the matched
    words on their own marked True (render them as ``<mark>``, as text, never HTML).
    ``time``: the task's ``created_time``, or the conversation's ``updated_time``.
    """

    session_id: str
    session_name: str | None
    task_id: str | None
    snippet: tuple[tuple[str, bool], ...]
    rank: float
    time: int

    @classmethod
    def of(cls, hit: SearchHit, terms: tuple[str, ...]) -> SearchResult:
        """The result for a store's hit: its snippet made from the hit's text."""
        return cls(
            hit.session_id,
            hit.session_name,
            hit.task_id,
            snippet(hit.text, terms),
            hit.rank,
            hit.time,
        )

    @property
    def snippet_text(self) -> str:
        """The snippet as plain text."""
        return "".join(text for text, _ in self.snippet)


class SessionService:
    """Conversations, chat tasks, feedback and key-value state, over one ``Store``.

    Inside an app the middleware owns it (``get_session_service(request)``). Outside
    one: ``async with SessionService.from_config(config) as service: ...``; entering
    starts the store (the SQL store migrates its schema), leaving closes it.
    """

    def __init__(self, store: Store, *, ttl: int | None = None, timeout: float = 10.0) -> None:
        """``ttl``: seconds a conversation may stay idle before it expires (None: never).

        ``timeout``: seconds any one call may take before it fails with
        ``StoreUnavailable``.
        """
        if ttl is not None and ttl <= 0:
            raise InvalidInput("ttl", f"must be a positive number of seconds, not {ttl!r}")
        self.store = store
        self.ttl_ms = None if ttl is None else ttl * 1000
        self.timeout = timeout
        #: Where store calls are counted and timed; None without prometheus_client.
        self.metrics: Metrics | None = get_metrics()
        self._started = False
        self._asyncio = False  # started on asyncio (set by start())
        self._start_lock: anyio.Lock | None = None

    @classmethod
    def from_config(cls, config: AgentSessionConfig | ServiceConfig) -> SessionService:
        """The service ``config.session_service`` describes (memory or sql); not started."""
        service = config.session_service if isinstance(config, AgentSessionConfig) else config
        store: Store
        if service.type == "dynamodb":
            from agentsession.stores.dynamodb import DEFAULT_TABLE, DynamoDBStore

            store = DynamoDBStore(
                service.table_name or DEFAULT_TABLE,
                endpoint_url=service.endpoint_url,
                region=service.region,
                pool_size=service.pool_size,
            )
        elif service.type == "redis":
            from agentsession.stores.redis import RedisStore

            assert service.database_url is not None  # the config validated it
            prefix = f"{service.table_prefix}agentsession:"
            store = RedisStore(service.database_url, pool_size=service.pool_size, key_prefix=prefix)
        elif service.type == "sql":
            from agentsession.stores.sql import SqlStore

            assert service.database_url is not None  # the config validated it
            store = SqlStore(
                service.database_url,
                pool_size=service.pool_size,
                table_prefix=service.table_prefix,
                schema=service.schema,
                search_language=service.search_language,
            )
        else:
            from agentsession.stores.memory import MemoryStore

            retention = config.data_retention if isinstance(config, AgentSessionConfig) else None
            store = MemoryStore(retention=retention)
        return cls(store, ttl=service.ttl, timeout=service.timeout)

    async def start(self) -> None:
        """Make the store ready (run migrations); safe to call more than once.

        Called by the middleware's lifespan startup and by ``async with``; a service
        used without either starts itself on its first call.
        """
        library = sniffio.current_async_library()
        self._asyncio = library == "asyncio"
        if getattr(self.store, "requires_asyncio", False) and library != "asyncio":
            raise ConfigError(
                f"{type(self.store).__name__} needs asyncio, but this app runs on {library}: "
                "run it on asyncio (the SQL, Redis and DynamoDB stores are built on SQLAlchemy's, "
                "redis-py's and aiobotocore's asyncio clients), or use the memory store"
            )
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
        async with self._start_lock:
            # Migrations may queue behind another instance's: no timeout here.
            await self.store.start()
            self._started = True

    @property
    def started(self) -> bool:
        """Whether ``start()`` ran and ``close()`` has not since."""
        return self._started

    async def close(self) -> None:
        """Release the store's connections (dispose the engine)."""
        self._started = False
        await self.store.close()

    async def __aenter__(self) -> SessionService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ping(self, within: float = 1.0) -> None:
        """Check that the store answers within ``within`` seconds (a health check).

        One cheap round trip (``SELECT 1``, Redis ``PING``). Raises
        ``StoreUnavailable`` when the store is down or slower than ``within``.
        """
        await self._call(self.store.ping(), timeout=within)

    # Conversations

    async def create_session(
        self,
        user_id: str,
        *,
        agent_id: str | None = None,
        name: str | None = None,
        session_id: str | None = None,
        client_id: str | None = None,
    ) -> SessionRecord:
        """Start a conversation for ``user_id``; ``session_id`` picks its id (else random).

        Raises ``IdConflict`` when ``session_id`` is taken.
        """
        now = now_ms()
        record = SessionRecord(
            id=new_id() if session_id is None else _id(session_id, "session_id"),
            user_id=_id(user_id, "user_id"),
            client_id=_optional_id(client_id, "client_id"),
            name=_name(name),
            agent_id=_optional_id(agent_id, "agent_id"),
            created_time=now,
            updated_time=now,
            last_viewed_at=None,
            expires_at=self._expiry(now),
        )
        await self._call(self.store.insert_session(record))
        return record

    async def get_session(self, user_id: str, session_id: str) -> SessionRecord:
        """The user's conversation (one query); ``SessionNotFound`` if missing or expired."""
        found = await self._call(
            self.store.get_session(_id(user_id, "user_id"), _id(session_id, "session_id"), now_ms())
        )
        return _found(found, session_id)

    async def list_sessions(
        self,
        user_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        pinned: bool | None = None,
    ) -> Page[SessionRecord]:
        """The user's conversations, most recently updated first, one page at a time.

        ``pinned=True`` lists only the pinned ones, ``pinned=False`` only the others (a
        sidebar shows the first above the second); None lists them all.
        """
        user = _id(user_id, "user_id")
        size = _limit(limit)
        if pinned is not None and not isinstance(pinned, bool):
            raise InvalidInput("pinned", f"must be true, false or None, not {pinned!r:.80}")
        rows = await self._call(
            self.store.list_sessions(
                user, now_ms(), size + 1, _decode_cursor(cursor), pinned=pinned
            )
        )
        return _page(rows, size)

    async def pin_session(
        self, user_id: str, session_id: str, pinned: bool = True
    ) -> SessionRecord:
        """Pin (or, with ``pinned=False``, unpin) the conversation: a pinned one is never
        deleted by retention's idle or chat-task rules. Its ``updated_time`` stays."""
        if not isinstance(pinned, bool):
            raise InvalidInput("pinned", f"must be true or false, not {pinned!r:.80}")
        return await self._update_session(user_id, session_id, pinned=pinned)

    # Search

    async def search(
        self, user_id: str, query: str, *, limit: int = 20, cursor: str | None = None
    ) -> Page[SearchResult]:
        """The user's conversations and chat tasks that match ``query``, best first.

        Conversation names that match come first, then tasks by relevance (a word
        repeated counts more), newest first among equals. Each result has a snippet
        with the matched words marked. Matching is by word prefix, every word of the
        query required; quotes and operators are plain text (``agentsession.search``).
        """
        user = _id(user_id, "user_id")
        terms = parse_query(query)
        size = _limit(limit)
        hits = await self._call(
            self.store.search(
                user, SearchQuery(query, terms), now_ms(), size + 1, _decode_search_cursor(cursor)
            )
        )
        results = [SearchResult.of(hit, terms) for hit in hits[:size]]
        more = _encode_search_cursor(hits[size - 1].sort_key) if len(hits) > size else None
        return Page(results, more)

    async def rename_session(
        self, user_id: str, session_id: str, name: str | None, *, pinned: bool | None = None
    ) -> SessionRecord:
        """Set (or, with None, clear) the conversation's name; with ``pinned``, also pin
        or unpin it in the same write."""
        if pinned is not None and not isinstance(pinned, bool):
            raise InvalidInput("pinned", f"must be true or false, not {pinned!r:.80}")
        return await self._update_session(
            user_id, session_id, name=_name(name), rename=True, pinned=pinned
        )

    async def mark_viewed(self, user_id: str, session_id: str) -> SessionRecord:
        """Record that the user opened the conversation now; this also slides its TTL."""
        return await self._update_session(user_id, session_id, viewed=True)

    async def delete_session(self, user_id: str, session_id: str) -> None:
        """Delete the conversation with its chat tasks and feedback."""
        deleted = await self._call(
            self.store.delete_session(
                _id(user_id, "user_id"), _id(session_id, "session_id"), now_ms()
            )
        )
        if not deleted:
            raise SessionNotFound(session_id)

    # Chat tasks

    async def save_task(
        self,
        user_id: str,
        session_id: str,
        task_id: str,
        *,
        user_message: str | None = None,
        message_bubbles: Any = (),
        task_metadata: Any = None,
        viewed: bool = False,
    ) -> TaskRecord:
        """Insert or replace the user's chat task ``task_id``, atomically.

        ``message_bubbles`` and ``task_metadata`` are any JSON values. Saving is
        activity: the conversation's TTL slides, and with ``viewed`` it is marked read
        (``last_viewed_at``), in the same write, so a failure saves nothing. Concurrent
        saves of one task are safe (the last one wins). Task ids are the user's own:
        another user's ``task_id`` is never in the way. Raises ``SessionNotFound``
        when the conversation is not the user's, ``IdConflict`` when the user's
        ``task_id`` is in another of their conversations.
        """
        now = now_ms()
        record = TaskRecord(
            id=_id(task_id, "task_id"),
            session_id=_id(session_id, "session_id"),
            user_id=_id(user_id, "user_id"),
            user_message=_optional_text(user_message, "user_message"),
            message_bubbles=_json_value(
                list(message_bubbles) if isinstance(message_bubbles, tuple) else message_bubbles,
                "message_bubbles",
            ),
            task_metadata=_json_value(task_metadata, "task_metadata"),
            created_time=now,
            updated_time=now,
        )
        saved = await self._call(
            self.store.save_task(record, Touch(self._expiry(now), viewed=viewed is True))
        )
        return _found(saved, session_id)

    async def list_tasks(
        self,
        user_id: str,
        session_id: str,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page[TaskRecord]:
        """The conversation's chat tasks, oldest first, one page at a time.

        ``newest_first=True``: the latest ``limit`` turns first, and each next page the
        ones before them: how an agent loads its context window (one query on an
        index, however long the conversation). A cursor continues in the order it was
        made in.
        """
        user, session = _id(user_id, "user_id"), _id(session_id, "session_id")
        size = _limit(limit)
        if not isinstance(newest_first, bool):
            raise InvalidInput("newest_first", f"must be True or False, not {newest_first!r}")
        after = _decode_cursor(cursor)
        rows = await self._call(
            self.store.list_tasks(
                user, session, now_ms(), size + 1, after, newest_first=newest_first
            )
        )
        return _page(_found(rows, session_id), size)

    # Feedback

    async def add_feedback(
        self,
        user_id: str,
        session_id: str,
        task_id: str,
        rating: str,
        comment: str | None = None,
    ) -> FeedbackRecord:
        """Rate a chat task ``up`` or ``down``; the user's earlier rating of it is replaced.

        Raises ``SessionNotFound`` when the conversation or the task in it is not the
        user's.
        """
        now = now_ms()
        record = FeedbackRecord(
            id=new_id(),
            session_id=_id(session_id, "session_id"),
            task_id=_id(task_id, "task_id"),
            user_id=_id(user_id, "user_id"),
            rating=_rating(rating),
            comment=_optional_text(comment, "comment"),
            created_time=now,
        )
        saved = await self._call(self.store.save_feedback(record, now))
        return _found(saved, session_id)

    async def list_feedback(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        task_id: str | None = None,
        rating: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page[FeedbackRecord]:
        """The user's feedback, newest first; filters combine (``since`` <= time < ``until``)."""
        for field, value in (("since", since), ("until", until)):
            if value is not None and (type(value) is not int or value < 0):
                raise InvalidInput(field, "must be epoch milliseconds (a non-negative int)")
        where = FeedbackFilter(
            session_id=_optional_id(session_id, "session_id"),
            task_id=_optional_id(task_id, "task_id"),
            rating=None if rating is None else _rating(rating),
            since=since,
            until=until,
        )
        size = _limit(limit)
        rows = await self._call(
            self.store.list_feedback(
                _id(user_id, "user_id"), where, size + 1, _decode_cursor(cursor)
            )
        )
        return _page(rows, size)

    # State

    async def state(
        self, user_id: str, session_id: str, namespace: str = "default"
    ) -> SessionState:
        """The conversation's key-value state in ``namespace`` (one query to load it)."""
        user, session = _id(user_id, "user_id"), _id(session_id, "session_id")
        space = _id(namespace, "namespace")
        handle = SessionState(self, user, session, space)
        await handle.refresh()
        return handle

    # Revocation: sessions issued until now stop counting (see agentsession.revocation).

    async def revoke_client(self, client_id: str, *, keep_for: int | None = None) -> int:
        """Void every session of client ``client_id`` issued until now: this browser (or
        token client) and every copy of its cookie. Returns the revocation time (epoch ms).

        ``keep_for``: seconds the store must remember it (the cookie ``max_age``; None:
        for good). Each app instance sees it within ``session.revocation_staleness``.
        """
        return await self._revoke("client", _id(client_id, "client_id"), keep_for)

    async def revoke_user(self, user_id: str, *, keep_for: int | None = None) -> int:
        """Void every session bound to ``user_id`` issued until now, on every client."""
        return await self._revoke("user", _id(user_id, "user_id"), keep_for)

    async def list_revocations(
        self, since: int, *, limit: int = MAX_PAGE_SIZE, after: tuple[int, str, str] | None = None
    ) -> list[Revocation]:
        """Revocations recorded at or after ``since`` (epoch ms), oldest first, one page."""
        return await self._call(self.store.list_revocations(since, now_ms(), _limit(limit), after))

    async def _revoke(self, kind: str, subject: str, keep_for: int | None) -> int:
        if keep_for is not None and (type(keep_for) is not int or keep_for < 0):
            raise InvalidInput(
                "keep_for", f"must be seconds (an int >= 0) or None, not {keep_for!r}"
            )
        now = now_ms()
        keep_until = None if keep_for is None else now + keep_for * 1000
        await self._call(self.store.revoke(Revocation(kind, subject, now, keep_until), now))
        return now

    # A user's data (the document: agentsession.export)

    def export_user(self, user_id: str) -> AsyncIterator[bytes]:
        """The user's every row as a versioned JSON document, in UTF-8 chunks.

        Streamed from the store a page at a time, so memory stays bounded however
        many tasks the user has. Each store call has the service's timeout.
        """
        from agentsession.export import write_document

        return write_document(self.store, self._call, _id(user_id, "user_id"), now_ms())

    async def import_user(
        self, document: bytes | str | Mapping[str, Any], *, user_id: str | None = None
    ) -> UserCounts:
        """Load an export document (of this or another deployment), ids kept.

        All or nothing: every value is checked first (``InvalidInput`` naming it), and
        an id already taken raises ``IdConflict`` naming it, with nothing written.
        ``user_id`` loads the rows for another user than the document names.
        Returns how many conversations, chat tasks and feedback rows were loaded.
        """
        from agentsession.export import parse, read_document

        rows = read_document(parse(document), _check, user_id)
        count = len(rows.sessions) + len(rows.tasks) + len(rows.feedback)
        # One atomic write, however large: a second of time allowed per 1,000 rows.
        await self._call(self.store.import_rows(rows), timeout=self.timeout + count / 1000)
        return UserCounts(len(rows.sessions), len(rows.tasks), len(rows.feedback))

    async def erase_user(
        self,
        user_id: str,
        *,
        batch_size: int = 1000,
        keep_for: int | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> int:
        """Delete every row of ``user_id`` in batches, then revoke all their sessions.

        Each batch is one short step of at most about ``batch_size`` rows (children
        first); ``progress(deleted so far)`` is called after each. No other user's
        row is touched. ``keep_for`` as in ``revoke_user``. Returns the rows deleted.
        """
        user = _id(user_id, "user_id")
        size = _limit_batch(batch_size)
        total = 0
        while deleted := await self._call(self.store.erase_batch(user, size)):
            total += deleted
            if progress is not None:
                progress(total)
        await self.revoke_user(user, keep_for=keep_for)
        return total

    # Internals

    async def _update_session(self, user_id: str, session_id: str, **changes: Any) -> SessionRecord:
        """One ``Store.update_session`` call at ``now``, sliding the expiry."""
        now = now_ms()
        found = await self._call(
            self.store.update_session(
                _id(user_id, "user_id"),
                _id(session_id, "session_id"),
                now,
                self._expiry(now),
                **changes,
            )
        )
        return _found(found, session_id)

    def _expiry(self, now: int) -> int | None:
        return None if self.ttl_ms is None else now + self.ttl_ms

    async def _call(
        self,
        operation: Awaitable[T],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a bound, applied inside)
    ) -> T:
        """Await a store operation; past ``timeout`` (default: the service's) it is
        cancelled: ``StoreUnavailable``."""
        if not self._started:
            try:
                await self.start()
            except BaseException:
                if inspect.iscoroutine(operation):
                    operation.close()  # never started: don't leave it un-awaited
                raise
        limit = self.timeout if timeout is None else timeout
        metrics = self.metrics
        started = 0.0 if metrics is None else perf_counter()
        try:
            if self._asyncio:  # asyncio's own timeout: a fraction of anyio's cost per call
                async with asyncio.timeout(limit):
                    result = await operation
            else:
                with anyio.fail_after(limit):
                    result = await operation
        except TimeoutError:
            error = StoreUnavailable(f"the session store did not answer within {limit} seconds")
            self._failed(operation, error, "timeout", limit, started)
            raise error from None
        except BaseException as error:
            self._failed(operation, error, outcome_of(error), limit, started)
            raise
        if metrics is not None:
            metrics.store_call(operation_name(operation)).observe("ok", perf_counter() - started)
        return result

    def _failed(
        self,
        operation: Awaitable[Any],
        error: BaseException,
        outcome: str,
        limit: float,
        started: float,
    ) -> None:
        """Count a failed store call; log an outage with its fields (for JSON logs).

        Every store call goes through ``_call``, so this is the one place an outage is
        seen, whoever made the call (a route, the app, a retention run).
        """
        metrics = self.metrics
        if metrics is not None:
            seconds = perf_counter() - started
            metrics.store_call(operation_name(operation)).observe(outcome, seconds)
        if not isinstance(error, StoreUnavailable):
            return
        misconfigured = isinstance(error, StoreMisconfigured)
        state = "misconfigured" if misconfigured else "unavailable"
        logger.log(
            logging.ERROR if misconfigured else logging.WARNING,
            "the session store is %s (%s): %s",
            state,
            operation_name(operation),
            error,
            extra={
                "agentsession_event": f"store_{state}",
                "operation": operation_name(operation),
                "outcome": outcome,
                "store": type(self.store).__name__,
                "error_type": type(error).__name__,
                "timeout_s": limit,
            },
        )


class UserCounts(NamedTuple):
    """How many rows of each kind ``import_user`` loaded."""

    conversations: int
    chat_tasks: int
    feedback: int


class SessionState:
    """One namespace of a conversation's key-value state (``await service.state(...)``).

    Reads come from the snapshot loaded when the handle was made (``refresh()``
    reloads it). Writes go to the store at once and are optimistic: when another
    writer got in first, the handle reloads and re-applies only its own change, so
    concurrent writers of different keys all keep their values and, of one key, the
    last writer wins. Values are any JSON values.
    """

    __slots__ = ("_data", "_document", "_version", "namespace", "service", "session_id", "user_id")

    def __init__(
        self, service: SessionService, user_id: str, session_id: str, namespace: str
    ) -> None:
        self.service = service
        self.user_id = user_id
        self.session_id = session_id
        self.namespace = namespace
        self._document: dict[str, Any] = {}
        self._data: dict[str, Any] = {}
        self._version = 0

    async def refresh(self) -> None:
        """Reload the state from the store (one query)."""
        service = self.service
        loaded = await service._call(
            service.store.load_state(self.user_id, self.session_id, now_ms())
        )
        state_json, self._version = _found(loaded, self.session_id)
        document = json.loads(state_json)
        self._document = document if isinstance(document, dict) else {}
        data = self._document.get(self.namespace)
        self._data = data if isinstance(data, dict) else {}

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._data.get(key, default)

    async def keys(self) -> list[str]:
        """The keys set in this namespace."""
        return list(self._data)

    async def items(self) -> list[tuple[str, Any]]:
        """The (key, value) pairs of this namespace."""
        return list(self._data.items())

    async def set(self, key: str, value: Any) -> None:
        """Set one key (one statement unless another writer got in first)."""
        await self.update({key: value})

    async def update(self, values: Mapping[str, Any]) -> None:
        """Set several keys in one write."""
        changes = {
            _key(key): _json_value(value, f"state[{key!r}]") for key, value in values.items()
        }
        await self._write(changes, clear=False)

    async def delete(self, *keys: str) -> None:
        """Remove keys; keys that are not set are ignored."""
        await self._write(dict.fromkeys((_key(key) for key in keys), _DELETE), clear=False)

    async def clear(self) -> None:
        """Remove every key of this namespace (other namespaces are kept)."""
        await self._write({}, clear=True)

    def __repr__(self) -> str:
        return f"SessionState(session_id={self.session_id!r}, namespace={self.namespace!r})"

    async def _write(self, changes: dict[str, Any], *, clear: bool) -> None:
        service = self.service
        for attempt in range(STATE_WRITE_ATTEMPTS):
            data = {} if clear else dict(self._data)
            for key, value in changes.items():
                if value is _DELETE:
                    data.pop(key, None)
                else:
                    data[key] = value
            document = dict(self._document)
            if data:
                document[self.namespace] = data
            else:
                document.pop(self.namespace, None)
            now = now_ms()
            written = await service._call(
                service.store.write_state(
                    self.user_id,
                    self.session_id,
                    now,
                    service._expiry(now),
                    dump_json(document),
                    self._version,
                )
            )
            if written is None:
                raise SessionNotFound(self.session_id)
            if written:
                self._document, self._data, self._version = document, data, self._version + 1
                return
            # Another writer got in first: back off a little, reload, re-apply ours.
            await anyio.sleep(random.uniform(0, min(0.002 * (attempt + 1), 0.05)))
            await self.refresh()
        raise StoreUnavailable(
            f"the state of conversation {self.session_id!r} changed under every one of "
            f"{STATE_WRITE_ATTEMPTS} attempts to write it; try again"
        )


# Validation: every check names the field and runs before anything is written.


def _id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, f"must be a non-empty string, not {value!r:.80}")
    if len(value) > ID_LENGTH:
        raise InvalidInput(field, f"is {len(value)} characters; the limit is {ID_LENGTH}")
    _check_text(value, field)
    return value


def _optional_id(value: object, field: str) -> str | None:
    return None if value is None else _id(value, field)


def _key(value: object) -> str:
    return _id(value, "key")


def _rating(value: object) -> str:
    if value not in RATINGS:
        raise InvalidInput("rating", f"must be 'up' or 'down', not {value!r}")
    return str(value)


def _name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("name", f"must be a string or null, not {type(value).__name__}")
    if len(value) > NAME_LENGTH:
        raise InvalidInput("name", f"is {len(value)} characters; the limit is {NAME_LENGTH}")
    _check_text(value, "name")
    return value


def _optional_text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string or null, not {type(value).__name__}")
    _check_text(value, field)
    return value


def _check_text(value: str, field: str) -> None:
    """Refuse what no database stores as text: NUL and unpaired surrogates."""
    if "\x00" in value:
        raise InvalidInput(field, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "is not valid Unicode (unpaired surrogate)") from None


def _json_value(value: Any, field: str) -> Any:
    """``value`` if it is plain JSON (a copy made through JSON), else ``InvalidInput``."""
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidInput(field, f"nests deeper than {MAX_JSON_DEPTH} arrays or objects")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidInput(field, f"is not JSON-serialisable: {error}") from None
    _check_text(text, field)
    return json.loads(text)


def _depth(value: Any) -> int:
    """How deeply lists, tuples and dicts nest in ``value`` (without recursing)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def _limit_batch(size: object) -> int:
    if type(size) is not int or not 1 <= size <= 100_000:
        raise InvalidInput("batch_size", f"must be an int from 1 to 100000, not {size!r}")
    return size


def _time(value: object, field: str) -> int:
    if type(value) is not int or not _MIN_KEY <= value <= _MAX_KEY:
        raise InvalidInput(field, f"must be epoch milliseconds (an int), not {value!r:.80}")
    return value


def _check(value: Any, kind: str, field: str) -> Any:
    """One value of an import document, checked as the service checks its arguments."""
    if kind == "id":
        return _id(value, field)
    if kind == "optional_id":
        return _optional_id(value, field)
    if kind == "name":
        try:
            return _name(value)
        except InvalidInput as error:
            raise InvalidInput(field, str(error).removeprefix("name: ")) from None
    if kind == "text":
        return _optional_text(value, field)
    if kind == "json":
        return _json_value(value, field)
    if kind == "rating":
        if value not in RATINGS:
            raise InvalidInput(field, f"must be 'up' or 'down', not {value!r:.80}")
        return value
    if kind == "optional_time":
        return None if value is None else _time(value, field)
    if kind == "int":
        if type(value) is not int or value < 0:
            raise InvalidInput(field, f"must be an int >= 0, not {value!r:.80}")
        return value
    return _time(value, field)


def _limit(limit: object) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput("limit", f"must be an int from 1 to {MAX_PAGE_SIZE}, not {limit!r}")
    return limit


#: The range of a cursor's time: a signed 64-bit integer, what every store's column holds.
_MIN_KEY, _MAX_KEY = -(2**63), 2**63 - 1


def encode_cursor(key: tuple[int, str]) -> str:
    """An opaque page cursor for a sort key."""
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


#: The longest cursor ``encode_cursor`` makes: the widest time and an id of astral
#: characters, each escaped as a surrogate pair (12 bytes of JSON per character).
_MAX_CURSOR: Final = len(encode_cursor((_MIN_KEY, "\U0010ffff" * ID_LENGTH)))


_BAD_CURSOR: Final = "is not a cursor this service returned"


def _cursor_fields(cursor: object, count: int, longest: int) -> list[Any] | None:
    """The ``count`` JSON values a cursor holds (None for no cursor); a cursor that
    is not one this service made raises ``InvalidInput("cursor")``."""
    if cursor is None or cursor == "":
        return None
    bad = InvalidInput("cursor", _BAD_CURSOR)
    if not isinstance(cursor, str) or len(cursor) > longest:
        raise bad
    try:
        fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise bad from None
    if not isinstance(fields, list) or len(fields) != count:
        raise bad
    return fields


def _key_part(time_: object, id_: object) -> tuple[int, str]:
    """A cursor's time and id, checked as every other input is: a sort key the stores
    can hold, so a tampered cursor is a 422 naming ``cursor``, never a database error."""
    bad = InvalidInput("cursor", _BAD_CURSOR)
    if type(time_) is not int or not _MIN_KEY <= time_ <= _MAX_KEY:
        raise bad
    if not isinstance(id_, str) or not id_ or len(id_) > ID_LENGTH:
        raise bad
    try:
        _check_text(id_, "cursor")
    except InvalidInput:
        raise bad from None
    return time_, id_


def _decode_cursor(cursor: object) -> tuple[int, str] | None:
    fields = _cursor_fields(cursor, 2, _MAX_CURSOR)
    return None if fields is None else _key_part(*fields)


def _encode_search_cursor(key: SearchKey) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_search_cursor(cursor: object) -> SearchKey | None:
    """The search key in a cursor ``search`` returned; ``InvalidInput("cursor")`` else."""
    fields = _cursor_fields(cursor, 4, _MAX_CURSOR + 64)
    if fields is None:
        return None
    group, rank = fields[0], fields[1]
    bad = InvalidInput("cursor", _BAD_CURSOR)
    if type(group) is not int or group not in (0, 1) or type(rank) not in (int, float):
        raise bad
    try:
        rank = float(rank)
    except OverflowError:  # an int too large for a float
        raise bad from None
    if not math.isfinite(rank):
        raise bad
    time_, id_ = _key_part(fields[2], fields[3])
    return group, rank, time_, id_


def _page(rows: Iterable[Any], size: int) -> Page[Any]:
    items = list(rows)
    if len(items) > size:
        del items[size:]
        return Page(items, encode_cursor(items[-1].sort_key))
    return Page(items, None)


def _found(value: T | None, session_id: str) -> T:
    if value is None:
        raise SessionNotFound(session_id)
    return value
