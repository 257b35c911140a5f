"""RedisStore: the Store contract over Redis (redis-py's asyncio client), one script a call.

Key layout (``P`` is ``key_prefix``; ``<u>``, ``<sid>`` are ids percent-encoded by
``keys.escape``, so that ``{``, ``}``, ``:`` and ``%`` in an id can neither move the
hash tag nor make two ids share a key). Everything of one user is in the hash slot of
``{u:<u>}``, so each call is one Lua script on one Redis Cluster node, with every key
it touches passed in ``KEYS`` (computed here, never built inside Lua):

* ``P{u:<u>}:c`` hash: conversation id -> its record (JSON: client, name, agent,
  times, ``expires_at``, state version, its ``S`` member, its latest task save,
  ``pinned``).
* ``P{u:<u>}:S`` zset (all scores 0, byte order): ``descending(updated_time) + id``,
  the listing, newest first, ties by id. ``:P`` zset: the same members for the
  pinned conversations only (``list_sessions(pinned=True)`` pages it;
  ``pinned=False`` pages ``S`` skipping ``P``'s members).
* ``P{u:<u>}:E`` zset: conversation id scored by ``expires_at`` (only those with one).
* ``P{u:<u>}:s:<sid>`` string: the state JSON. ``:t:<sid>`` hash: task id ->
  ``ascending(created_time) + JSON`` of the task. ``:T:<sid>`` zset (byte order):
  ``ascending(created_time) + task id``, the task listing. These three carry the
  conversation's ``expires_at`` as their Redis expiry (``PEXPIREAT``, slid by every
  write), so Redis itself frees a conversation's state and tasks when it expires.
* ``P{u:<u>}:th`` hash: task id -> its conversation id (task ids are per user).
  ``:X`` zset (byte order): ``<sid>\\0<task id>``, a conversation's tasks even after
  Redis expired its keys. ``:U`` zset: the same members scored by ``updated_time``
  (the task retention rule), or ``+inf`` while their conversation is pinned (pinning
  and unpinning rescore the conversation's tasks: O(its tasks), in one script).
* ``P{u:<u>}:f`` hash: feedback id -> ``descending(created_time) + JSON`` record;
  ``:F`` zset (byte order): ``descending(created_time) + feedback id``, the listing;
  ``:fk`` hash: task id -> feedback id (one rating per user and task).
* ``P{i:<sid>}`` string: ``<claimed at ms>:<owner user id>``, the registry that makes
  conversation ids global (its own slot).
* ``P`` + ``lease:<name>`` hash ``{owner, expires_at}``: a lease (kept after it ends).

Round trips: every call is one ``EVALSHA`` (``EVAL`` once per script if the server
lost its script cache), except ``insert_session`` (two: claim the id in the registry,
then the user's script; one more to take over a claim left by a crashed writer) and
``delete_session`` (two when it deletes: the user's script, then the registry entry).
``start()`` is one pipeline (``PING`` and ``SCRIPT LOAD``). A retention batch is a
``SCAN`` over the users' ``c`` keys, one pipeline reading the candidates of a group of
users, one pipeline of per-user delete scripts (each atomic in its user's slot,
re-checking the rule), and, for conversations, one pipeline freeing their ids.
Scripts do bounded work (``ZRANGEBYLEX``/``ZRANGEBYSCORE`` with ``LIMIT`` from the
cursor), except ``list_feedback`` filtered by conversation or rating, which scans the
user's feedback from the cursor until it has a page, and the dry-run counts.

Search (``search``) has no index: it scans the user's own keys, every one in the
user's hash slot, never another user's. It pages the user's live conversations
(``list_sessions``, ``SEARCH_GROUP`` at a time), matches their names in Python, then
reads their tasks with ``search_tasks`` (the stored tasks of live conversations, up
to ``SEARCH_TASKS`` tasks or ``SEARCH_BYTES`` bytes a round trip) and matches them in
Python, keeping only the best ``limit`` hits. Cost: O(the user's live conversations
and tasks) read and sent to the app, about ``conversations / SEARCH_GROUP + task
bytes / SEARCH_BYTES`` round trips; memory: a page plus ``2 * limit`` hits. A task's
text is only decoded when its stored JSON holds every term (casefolded).

Expiry: visibility always follows the contract (``expires_at <= now`` is missing, at
the caller's ``now``); Redis's own expiry is how the memory comes back. What a
conversation leaves in the user's indexes when Redis expires it (its record in ``c``
and ``S``, its tasks' ``th``/``X``/``U`` entries, its feedback) stays until the
retention job's ``expired_sessions`` rule, as an expired SQL row does: so its id stays
taken ("expired or not") and ``list_feedback`` keeps listing its feedback until then.
Redis must not evict keys (``maxmemory-policy noeviction``).

Redis Cluster: the key layout and the scripts are cluster-ready, but this store talks
to one server (or a Sentinel-less primary) through one ``redis.asyncio.Redis``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

from agentsession.common import dump_json, mask_url
from agentsession.errors import ConfigError, IdConflict, StoreUnavailable
from agentsession.stores.base import (
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
)
from agentsession.stores.redis import userdata
from agentsession.stores.redis.keys import (
    TIME_WIDTH,
    UserKeys,
    ascending,
    descending,
    glob_escape,
    lease_key,
    registry_key,
    time_of,
    unescape,
    user_of,
    user_pattern,
)
from agentsession.stores.redis.scripts import SCRIPTS, Script
from agentsession.stores.scan import BestHits, name_hit, task_hit

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

logger = logging.getLogger("agentsession.stores.redis")
T = TypeVar("T")

_URL_KEY = "session_service.database_url"
#: Seconds to open a connection, to wait for a reply, and to wait for a free pooled one.
CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 5.0
POOL_TIMEOUT = 5.0
#: Seconds a pooled connection may sit idle before it is checked (PING) on next use, so
#: that a restarted server's dead connections are replaced instead of failing a call.
HEALTH_CHECK_INTERVAL = 10
#: How long Redis keeps a conversation written with an expiry already past on Redis's
#: clock (see ``scripts.set_expiry``).
EXPIRED_FLOOR_MS = 300_000
#: A registry claim whose owner has not written its conversation after this long was
#: left by a writer that failed between its two round trips: the id may be taken over.
ORPHAN_CLAIM_MS = 60_000
#: Keys each ``SCAN`` of a retention batch asks for, users per pipelined group, and
#: the ``SCAN`` calls one batch may make.
SCAN_COUNT = 500
GROUP_SIZE = 32
SCANS_PER_BATCH = 20
#: Search: conversations listed per round trip, and the most tasks (or bytes of
#: them) one ``search_tasks`` round trip returns.
SEARCH_GROUP = 64
SEARCH_TASKS = 256
SEARCH_BYTES = 1 << 20
# URL query parameters the store accepts (redis-py's meaning); the rest are refused,
# as redis-py would only reject them at the first connection.
_URL_PARAMETERS = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
    }
)
# TLS parameters: rediss:// only.
_TLS_PARAMETERS = frozenset(
    {
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)


@dataclass(frozen=True, slots=True)
class _Walk:
    """Where a retention rule is in its walk over the users (``prune_batch``'s position).

    ``cursor``: the ``SCAN`` cursor to go on from; ``users``: users of the last ``SCAN``
    reply still to do, the first one possibly half done (``window``: for the idle rule,
    its next candidates sort below this listing member); ``scanned``: ``SCAN`` is done.
    """

    cursor: int
    users: tuple[str, ...]
    window: str | None
    scanned: bool


class RedisStore:
    """Conversations, tasks, feedback and state in Redis, shared by every app instance."""

    #: redis-py's asyncio client runs on asyncio only.
    requires_asyncio = True
    #: Retention runs in batches from ``RetentionScheduler``.
    prunes_lazily = False

    def __init__(self, url: str, *, pool_size: int = 10, key_prefix: str = "agentsession:") -> None:
        """``url``: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS) or
        ``unix:///path/to/socket?db=0``. Nothing connects until the first call.

        ``key_prefix`` starts every key, so that several apps (or tests) share a server.
        """
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{_URL_KEY}: {mask_url(url)} is a Redis URL, but redis-py is not installed: "
                "pip install 'agentsession[redis]'"
            ) from None
        if not isinstance(key_prefix, str) or "{" in key_prefix or "}" in key_prefix:
            raise ConfigError(
                f"RedisStore key_prefix: {key_prefix!r} may not contain '{{' or '}}' "
                "(they would change the keys' Redis Cluster hash slot)"
            )
        if type(pool_size) is not int or pool_size < 1:
            raise ConfigError(
                f"session_service.pool_size: must be a positive int, not {pool_size!r}"
            )
        self.url = url
        self.masked_url = mask_url(url)
        self.pool_size = pool_size
        self.key_prefix = key_prefix
        self._options = _connection_options(url, self.masked_url)
        self._redis: Redis | None = None

    def __repr__(self) -> str:
        return f"RedisStore({self.masked_url!r}, key_prefix={self.key_prefix!r})"

    # Connections

    def _client(self) -> Redis:
        """The client, its pool made on first use (so that it binds the running loop)."""
        client = self._redis
        if client is None:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError

            options = dict(self._options)
            options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
            options.setdefault("socket_timeout", SOCKET_TIMEOUT)
            options.setdefault("health_check_interval", HEALTH_CHECK_INTERVAL)
            # One retry, on a connection error only: a pooled connection found dead
            # (the health check's PING, or a write to a closed socket) is replaced
            # once. Never on a timeout, when the server may have run the script.
            options["retry"] = Retry(NoBackoff(), 1, (RedisConnectionError,))
            pool = BlockingConnectionPool(
                max_connections=self.pool_size,
                timeout=POOL_TIMEOUT,
                decode_responses=True,
                **options,
            )
            client = Redis.from_pool(pool)
            self._redis = client
        return client

    async def start(self) -> None:
        """Check that the server answers and load the scripts (one pipeline)."""

        async def run(client: Redis) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.ping()
            for script in SCRIPTS.values():
                pipe.script_load(script.text)
            await pipe.execute()

        await self._run(run)

    async def close(self) -> None:
        """Close every pooled connection; the store reconnects if used (or started) again."""
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        """Redis's ``PING``."""

        async def ping(client: Redis) -> None:
            await client.ping()

        await self._run(ping)

    async def _run(self, work: Callable[[Redis], Awaitable[T]]) -> T:
        """``work`` on the client, with redis-py's errors translated (``errors.translate``)."""
        from agentsession.stores.redis.errors import translate

        try:
            return await work(self._client())
        except Exception as error:
            translated = translate(error, self.masked_url)
            if translated is None:
                raise
            raise translated from error

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run ``script`` in one round trip (``EVALSHA``; ``EVAL`` if not cached)."""
        from redis.exceptions import NoScriptError

        async def run(client: Redis) -> Any:
            command = _command(client)
            try:
                return await command("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await command("EVAL", script.text, len(keys), *keys, *args)

        return await self._run(run)

    async def _eval_many(
        self, calls: Sequence[tuple[Script, Sequence[str], Sequence[str | int]]]
    ) -> list[Any]:
        """Run several scripts in one pipelined round trip (not atomic together)."""
        if not calls:
            return []
        from redis.exceptions import NoScriptError

        async def run(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            queue = cast("Callable[..., object]", pipe.execute_command)
            for script, keys, args in calls:
                queue("EVALSHA", script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            for index, result in enumerate(results):
                if isinstance(result, NoScriptError):
                    script, keys, args = calls[index]
                    results[index] = await _command(client)(
                        "EVAL", script.text, len(keys), *keys, *args
                    )
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results

        return await self._run(run)

    def _user(self, user_id: str) -> UserKeys:
        return UserKeys.of(self.key_prefix, user_id)

    # Conversations

    async def insert_session(self, record: SessionRecord) -> None:
        """Claim the id in the registry (global ids), then add the conversation."""
        registry = registry_key(self.key_prefix, record.id)
        held = await self._eval(SCRIPTS["claim_id"], [registry], [record.user_id])
        if held is not None and not await self._take_over(registry, str(held), record):
            raise IdConflict("session_id", record.id)
        keys = self._user(record.user_id).with_conversations([record.id])
        meta = _meta(record)
        args: list[str | int] = [
            record.id,
            meta,
            descending(record.updated_time) + record.id,
            _text(record.expires_at) or "",
            EXPIRED_FLOOR_MS,
        ]
        # 0: the user has it already, which only our own retried call can have done.
        # A failure here leaves the claim orphaned (the script may have run before a
        # timeout, so it is not undone blindly): ``_take_over`` frees it later.
        await self._eval(SCRIPTS["insert"], keys, args)

    async def _take_over(self, registry: str, held: str, record: SessionRecord) -> bool:
        """Whether a registry claim on ``record.id`` was orphaned and is now ours.

        A claim is orphaned when its owner has no such conversation (not even an
        expired one) and it is older than ``ORPHAN_CLAIM_MS``: a writer failed between
        claiming the id and writing the conversation, or a delete lost its last step.
        """
        _, _, owner = held.partition(":")
        owner_keys = self._user(owner).fixed

        async def exists(client: Redis) -> bool:
            return bool(await client.hexists(owner_keys[0], record.id))

        if await self._run(exists):
            return False
        taken = await self._eval(
            SCRIPTS["reclaim_id"], [registry], [held, record.user_id, ORPHAN_CLAIM_MS]
        )
        return bool(taken)

    async def _release_ids(self, owned: Sequence[tuple[str, str]]) -> None:
        """Free the ``(user id, conversation id)`` pairs' ids in the registry, pipelined
        (best effort: a failure leaves orphaned claims, which ``_take_over`` frees)."""
        calls: list[tuple[Script, Sequence[str], Sequence[str | int]]] = [
            (SCRIPTS["release_id"], [registry_key(self.key_prefix, sid)], [user_id])
            for user_id, sid in owned
        ]
        try:
            await self._eval_many(calls)
        except StoreUnavailable as error:
            logger.warning("could not free conversation ids in the registry: %s", error)

    async def get_session(self, user_id: str, session_id: str, now: int) -> SessionRecord | None:
        keys = self._user(user_id).with_conversations([session_id])
        meta = await self._eval(SCRIPTS["get"], keys, [session_id, now])
        return None if meta is None else _session(user_id, session_id, meta)

    async def list_sessions(
        self,
        user_id: str,
        now: int,
        limit: int,
        after: tuple[int, str] | None,
        *,
        pinned: bool | None = None,
    ) -> list[SessionRecord]:
        """The listing from ``S`` (``P`` for the pinned only) after the cursor,
        skipping expired conversations (and, for the unpinned only, ``P``'s)."""
        low = "-" if after is None else "(" + descending(after[0]) + after[1]
        only = "" if pinned is None else _flag(pinned)
        rows = await self._eval(
            SCRIPTS["list_sessions"], self._user(user_id).fixed, [now, low, limit, only]
        )
        return [_session(user_id, sid, meta) for sid, meta in _pairs(rows)]

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
        """One script; pinning or unpinning also rescores the conversation's tasks in
        ``U`` (O(its tasks))."""
        keys = self._user(user_id).with_conversations([session_id])
        args: list[str | int] = [
            session_id,
            now,
            _text(expires_at) or "",
            _flag(rename),
            _flag(name is not None),
            name or "",
            _flag(viewed),
            descending(now) + session_id,
            EXPIRED_FLOOR_MS,
            "" if pinned is None else _flag(pinned),
        ]
        meta = await self._eval(SCRIPTS["update"], keys, args)
        return None if meta is None else _session(user_id, session_id, meta)

    async def delete_session(self, user_id: str, session_id: str, now: int) -> bool:
        """The user's script deletes everything of it; then its id is freed."""
        keys = self._user(user_id).with_conversations([session_id])
        deleted = bool(await self._eval(SCRIPTS["delete"], keys, [session_id, now]))
        if deleted:
            await self._release_ids([(user_id, session_id)])
        return deleted

    # State

    async def load_state(self, user_id: str, session_id: str, now: int) -> tuple[str, int] | None:
        keys = self._user(user_id).with_conversations([session_id])
        found = await self._eval(SCRIPTS["load_state"], keys, [session_id, now])
        return None if found is None else (str(found[0]), int(found[1]))

    async def write_state(
        self,
        user_id: str,
        session_id: str,
        now: int,
        expires_at: int | None,
        state_json: str,
        version: int,
    ) -> bool | None:
        keys = self._user(user_id).with_conversations([session_id])
        args: list[str | int] = [
            session_id,
            now,
            _text(expires_at) or "",
            state_json,
            version,
            descending(now) + session_id,
            EXPIRED_FLOOR_MS,
        ]
        written = await self._eval(SCRIPTS["write_state"], keys, args)
        return None if written is None else bool(written)

    # Chat tasks

    async def save_task(self, record: TaskRecord, touch: Touch | None = None) -> TaskRecord | None:
        """Upsert the task, touch the conversation and slide its expiry: one script."""
        keys = self._user(record.user_id).with_conversations([record.session_id])
        body = dump_json(
            [
                record.updated_time,
                record.user_message,
                record.message_bubbles,
                record.task_metadata,
            ]
        )
        args: list[str | int] = [
            record.session_id,
            record.id,
            record.updated_time,
            ascending(record.created_time),
            body,
            _flag(touch is not None),
            "" if touch is None else _text(touch.expires_at) or "",
            _flag(touch is not None and touch.viewed),
            EXPIRED_FLOOR_MS,
        ]
        stored = await self._eval(SCRIPTS["save_task"], keys, args)
        if stored == -1:
            raise IdConflict("task_id", record.id)
        if stored == 0 or stored is None:
            return None
        return _task(record.user_id, record.session_id, record.id, str(stored))

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
        keys = self._user(user_id).with_conversations([session_id])
        # Members sort as (created, id): newest first is the same set read backward.
        start = ("+" if newest_first else "-") if after is None else "(" + ascending(after[0])
        if after is not None:
            start += after[1]
        args: list[str | int] = [session_id, now, start, limit, "rev" if newest_first else ""]
        rows = await self._eval(SCRIPTS["list_tasks"], keys, args)
        if rows is None:
            return None
        return [_task(user_id, session_id, tid, value) for tid, value in _pairs(rows)]

    # Search

    async def search(
        self, user_id: str, query: SearchQuery, now: int, limit: int, after: SearchKey | None
    ) -> list[SearchHit]:
        """A scan of the user's live conversations and their tasks (module docstring:
        Search), keeping the best ``limit`` hits after ``after``."""
        keys = self._user(user_id)
        best = BestHits(limit, after)
        low = "-"
        while True:
            # Not a snapshot: a conversation updated meanwhile moves ahead of the page
            # being read (never behind it), so it is met at most once.
            rows = await self._eval(
                SCRIPTS["list_sessions"], keys.fixed, [now, low, SEARCH_GROUP, ""]
            )
            page = [_session(user_id, sid, meta) for sid, meta in _pairs(rows)]
            for record in page:
                best.add(name_hit(record, query.terms))
            await self._search_tasks(keys, page, query.terms, now, best)
            if len(page) < SEARCH_GROUP:
                return best.hits()
            low = "(" + descending(page[-1].updated_time) + page[-1].id

    async def _search_tasks(
        self,
        keys: UserKeys,
        group: list[SessionRecord],
        terms: tuple[str, ...],
        now: int,
        best: BestHits,
    ) -> None:
        """Match the tasks of ``group``'s conversations, a ``search_tasks`` page at a time."""
        start = "-"
        while group:
            sids = [record.id for record in group]
            args: list[str | int] = [now, SEARCH_TASKS, SEARCH_BYTES, start, *sids]
            rows = await self._eval(SCRIPTS["search_tasks"], keys.with_conversations(sids), args)
            for index in range(2, len(rows), 3):
                record = group[int(rows[index]) - 1]
                best.add(_task_hit(record, str(rows[index + 1]), str(rows[index + 2]), terms))
            resume = int(rows[0])
            if resume == 0:
                return
            group, start = group[resume - 1 :], str(rows[1])

    # Feedback

    async def save_feedback(self, record: FeedbackRecord, now: int) -> FeedbackRecord | None:
        keys = self._user(record.user_id).with_conversations([record.session_id])
        body = dump_json(
            [record.session_id, record.task_id, record.rating, record.comment, record.created_time]
        )
        args: list[str | int] = [
            record.session_id,
            record.task_id,
            record.id,
            descending(record.created_time),
            body,
            now,
        ]
        saved = await self._eval(SCRIPTS["save_feedback"], keys, args)
        return record if saved else None

    async def list_feedback(
        self, user_id: str, where: FeedbackFilter, limit: int, after: tuple[int, str] | None
    ) -> list[FeedbackRecord]:
        """Newest first from ``F``; a task filter is one lookup (``fk``), other filters
        scan the user's feedback from the cursor on (within ``since``/``until``)."""
        low, high = _feedback_bounds(where, after)
        args: list[str | int] = [
            low,
            high,
            limit,
            where.task_id or "",
            where.session_id or "",
            where.rating or "",
        ]
        rows = await self._eval(SCRIPTS["list_feedback"], self._user(user_id).fixed, args)
        items = [_feedback(user_id, fid, value) for fid, value in _pairs(rows)]
        if where.task_id is not None:
            items = [item for item in items if where.matches(item, after)]
        return items[:limit]

    # Retention

    async def prune_batch(
        self, rule: str, cut: Cutoffs, position: object | None, limit: int
    ) -> tuple[int, object | None]:
        """Delete about ``limit`` old rows of ``rule``, walking the users with ``SCAN``.

        Candidates are read for a group of users at once (one pipeline), then deleted
        by one script per user (one pipeline), each re-checking the rule. The idle
        rule counts the candidates it looked at against ``limit`` (most may be kept),
        and goes on below the last one next time.
        """
        walk = position if isinstance(position, _Walk) else _Walk(0, (), None, False)
        done = deleted = scans = 0
        limit = max(1, limit)
        while done < limit:
            if not walk.users:
                if walk.scanned or scans >= SCANS_PER_BATCH:
                    break
                cursor, users = await self._scan_users(walk.cursor)
                scans += 1
                walk = _Walk(cursor, tuple(users), None, cursor == 0)
                continue
            looked, removed, finished, window = await self._prune_group(
                rule, cut, walk.users[:GROUP_SIZE], walk.window, limit - done
            )
            done += looked
            deleted += removed
            walk = _Walk(walk.cursor, walk.users[finished:], window, walk.scanned)
        if walk.scanned and not walk.users:
            return deleted, None
        return deleted, walk

    async def _scan_users(self, cursor: int) -> tuple[int, list[str]]:
        """One ``SCAN`` step: the next cursor and the users whose ``c`` keys it found."""
        pattern = user_pattern(self.key_prefix)

        async def run(client: Redis) -> tuple[int, list[Any]]:
            return await client.scan(cursor, match=pattern, count=SCAN_COUNT)

        next_cursor, keys = await self._run(run)
        users = [user for user in (user_of(self.key_prefix, str(key)) for key in keys) if user]
        return int(next_cursor), list(dict.fromkeys(users))

    async def _prune_group(
        self, rule: str, cut: Cutoffs, users: Sequence[str], window: str | None, budget: int
    ) -> tuple[int, int, int, str | None]:
        """One read and one delete pipeline over ``users``, within ``budget`` candidates.

        Returns the candidates looked at, the rows deleted, how many of the leading
        users are finished, and the idle window of the first unfinished one.
        """
        reads = await self._candidates(rule, cut, users, window, budget)
        looked = finished = 0
        next_window: str | None = None
        plan: list[tuple[str, list[str]]] = []
        for index, (user, candidates) in enumerate(zip(users, reads, strict=True)):
            take = candidates[: budget - looked]
            looked += len(take)
            if take:
                plan.append((user, take))
            if len(take) < len(candidates) or len(candidates) >= budget:
                # More may be left: this user goes on in the next group or batch.
                if rule == "idle_sessions":
                    next_window = take[-1] if take else (window if index == 0 else None)
                break
            finished += 1
            if looked >= budget:
                break
        removed = await self._delete(rule, cut, plan)
        return looked, removed, finished, next_window

    async def _candidates(
        self, rule: str, cut: Cutoffs, users: Sequence[str], window: str | None, budget: int
    ) -> list[list[str]]:
        """The next ``budget`` old rows of ``rule`` for each user, oldest first."""

        async def run(client: Redis) -> list[list[str]]:
            pipe = client.pipeline(transaction=False)
            for index, user in enumerate(users):
                keys = self._user(user).fixed
                if rule == "chat_tasks":
                    assert cut.tasks is not None
                    pipe.zrangebyscore(keys[5], "-inf", f"({cut.tasks}", start=0, num=budget)
                elif rule == "feedback":
                    assert cut.feedback is not None
                    bound = "[" + descending(cut.feedback - 1)
                    pipe.zrevrangebylex(keys[7], "+", bound, start=0, num=budget)
                elif rule == "expired_sessions":
                    pipe.zrangebyscore(keys[2], "-inf", cut.now, start=0, num=budget)
                else:
                    assert cut.idle is not None
                    top = "+" if index or window is None else "(" + window
                    bound = "[" + descending(cut.idle - 1)
                    pipe.zrevrangebylex(keys[1], top, bound, start=0, num=budget)
            found: list[list[str]] = await pipe.execute()
            return found

        return await self._run(run)

    async def _delete(self, rule: str, cut: Cutoffs, plan: Sequence[tuple[str, list[str]]]) -> int:
        """Run the rule's delete script for each ``(user, candidates)``; rows deleted."""
        calls: list[tuple[Script, Sequence[str], Sequence[str | int]]] = []
        for user, candidates in plan:
            keys = self._user(user)
            if rule == "chat_tasks":
                assert cut.tasks is not None
                sids = list(dict.fromkeys(member.partition("\0")[0] for member in candidates))
                place = {sid: number for number, sid in enumerate(sids, 1)}
                args: list[str | int] = [cut.tasks]
                for member in candidates:
                    args += [member, place[member.partition("\0")[0]]]
                calls.append((SCRIPTS["prune_tasks"], keys.with_conversations(sids), args))
            elif rule == "feedback":
                calls.append((SCRIPTS["prune_feedback"], keys.fixed, list(candidates)))
            else:
                sids = (
                    candidates
                    if rule == "expired_sessions"
                    else [member[TIME_WIDTH:] for member in candidates]
                )
                idle = cut.idle if cut.idle is not None else 0
                active = idle if cut.tasks is None else max(idle, cut.tasks)
                args = ["expired" if rule == "expired_sessions" else "idle", cut.now, idle, active]
                args.extend(sids)
                calls.append((SCRIPTS["prune_sessions"], keys.with_conversations(sids), args))
        results = await self._eval_many(calls)
        if rule in ("chat_tasks", "feedback"):
            return sum(int(result) for result in results)
        owned = [
            (user, str(sid)) for (user, _), gone in zip(plan, results, strict=True) for sid in gone
        ]
        await self._release_ids(owned)
        return len(owned)

    async def count_prunable(self, rule: str, cut: Cutoffs) -> int:
        """Every user's count (one script each over that user's candidates, pipelined per
        ``SCAN`` step): a dry run reads every old row once."""
        args: list[str | int] = [rule, cut.now, "" if cut.tasks is None else cut.tasks]
        if rule == "feedback":
            assert cut.feedback is not None
            args += ["[" + descending(cut.feedback - 1), 0, 0]
        elif rule == "idle_sessions":
            assert cut.idle is not None
            active = cut.idle if cut.tasks is None else max(cut.idle, cut.tasks)
            args += ["[" + descending(cut.idle - 1), cut.idle, active]
        else:
            args += ["-", 0, 0]
        total, cursor = 0, 0
        while True:
            cursor, users = await self._scan_users(cursor)
            calls = [(SCRIPTS["count"], self._user(user).fixed, args) for user in users]
            total += sum(int(result) for result in await self._eval_many(calls))
            if cursor == 0:
                return total

    async def take_lease(self, name: str, owner: str, expires_at: int, now: int) -> bool:
        """One script: take the lease if free, expired at ``now``, or ours."""
        key = lease_key(self.key_prefix, name)
        return bool(await self._eval(SCRIPTS["take_lease"], [key], [owner, expires_at, now]))

    async def release_lease(self, name: str, owner: str, now: int) -> None:
        key = lease_key(self.key_prefix, name)
        await self._eval(SCRIPTS["release_lease"], [key], [owner, now])

    async def lease_holder(self, name: str) -> Holder | None:
        key = lease_key(self.key_prefix, name)

        async def run(client: Redis) -> list[Any]:
            return await client.hmget(key, ["owner", "expires_at"])

        owner, expires_at = await self._run(run)
        if owner is None or expires_at is None:
            return None
        return Holder(str(owner), int(expires_at))

    # Revocation and a user's data: the scripts and calls of ``userdata``.

    async def revoke(self, revocation: Revocation, now: int) -> None:
        await userdata.revoke(self, revocation, now)

    async def list_revocations(
        self, since: int, now: int, limit: int, after: tuple[int, str, str] | None
    ) -> list[Revocation]:
        return await userdata.list_revocations(self, since, now, limit, after)

    async def export_sessions(
        self, user_id: str, limit: int, after: str | None
    ) -> list[StoredSession]:
        return await userdata.export_sessions(self, user_id, limit, after)

    async def export_tasks(
        self, user_id: str, session_id: str, limit: int, after: tuple[int, str] | None
    ) -> list[TaskRecord]:
        return await userdata.export_tasks(self, user_id, session_id, limit, after)

    async def import_rows(self, rows: UserRows) -> None:
        await userdata.import_rows(self, rows)

    async def erase_batch(self, user_id: str, limit: int) -> int:
        return await userdata.erase_batch(self, user_id, limit)

    # For tests: everything under the prefix, and what is inconsistent in it.

    async def _dump(self) -> dict[str, Any]:
        """Every stored row under ``key_prefix``, read key by key (tests only: slow).

        * ``sessions``: conversation id -> ``SessionRecord`` (also those whose keys
          Redis expired, until the retention job removes them);
        * ``states``: conversation id -> ``(state JSON, or None once Redis expired it,
          version)``;
        * ``chat_tasks``: ``(user id, task id)`` -> ``TaskRecord`` (None once Redis
          expired its conversation's keys); ``task_homes``: the same keys -> their
          conversation id;
        * ``feedback``: ``(user id, feedback id)`` -> ``FeedbackRecord``;
        * ``registry``: conversation id -> owner;
        * ``problems``: one line per broken link between the indexes (a task without
          its conversation, feedback without its task, an index entry without its
          record, a registry entry without its conversation...): empty when consistent.
        """

        async def run(client: Redis) -> dict[str, Any]:
            return await _dump(client, self.key_prefix)

        return await self._run(run)


def _connection_options(url: str, masked: str) -> dict[str, Any]:
    """redis-py's connection arguments for ``url``; ``ConfigError`` if it is unusable."""
    from redis.asyncio.connection import parse_url

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{_URL_KEY}: {masked!r} is not a usable Redis URL: {reason}")

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as error:
        raise bad(str(error)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise bad("use redis://host:port/db, rediss:// (TLS) or unix:///path/to/socket")
    if scheme == "unix" and not parts.path:
        raise bad("a unix:// URL needs the socket's path")
    if scheme != "unix":
        if not parts.hostname:
            raise bad("the host is missing")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise bad(f"the path must be a database number, not {parts.path!r}")
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    accepted = _URL_PARAMETERS | (_TLS_PARAMETERS if scheme == "rediss" else frozenset())
    unknown = sorted(set(names) - accepted)
    if unknown:
        raise bad(
            f"unknown parameter(s) {', '.join(unknown)} for a {scheme}:// URL; accepted: "
            + ", ".join(sorted(accepted))
        )
    try:
        options: dict[str, Any] = dict(parse_url(url))
    except ValueError as error:
        raise bad(str(error)) from None
    db = options.get("db", 0)
    if type(db) is not int or db < 0:
        raise bad(f"the database number must be a non-negative int, not {db!r}")
    return options


def _meta(record: SessionRecord, version: int = 0, latest_task: int | None = None) -> str:
    """The conversation's record as its ``c`` hash holds it (JSON)."""
    return dump_json(
        {
            "c": record.client_id,
            "n": record.name,
            "a": record.agent_id,
            "ct": str(record.created_time),
            "ut": str(record.updated_time),
            "lv": _text(record.last_viewed_at),
            "e": _text(record.expires_at),
            "v": str(version),
            "k": descending(record.updated_time) + record.id,
            "ta": _text(latest_task),
            "p": "1" if record.pinned else None,
        }
    )


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _pairs(rows: Sequence[Any]) -> list[tuple[str, str]]:
    return [(str(rows[i]), str(rows[i + 1])) for i in range(0, len(rows), 2)]


def _session(user_id: str, session_id: str, meta: str) -> SessionRecord:
    fields = json.loads(meta)
    return SessionRecord(
        id=session_id,
        user_id=user_id,
        client_id=fields["c"],
        name=fields["n"],
        agent_id=fields["a"],
        created_time=int(fields["ct"]),
        updated_time=int(fields["ut"]),
        last_viewed_at=_int(fields["lv"]),
        expires_at=_int(fields["e"]),
        pinned=fields.get("p") == "1",
    )


def _task(user_id: str, session_id: str, task_id: str, value: str) -> TaskRecord:
    updated, message, bubbles, metadata = json.loads(value[TIME_WIDTH:])
    return TaskRecord(
        id=task_id,
        session_id=session_id,
        user_id=user_id,
        user_message=message,
        message_bubbles=bubbles,
        task_metadata=metadata,
        created_time=time_of(value, newest_first=False),
        updated_time=int(updated),
    )


def _feedback(user_id: str, feedback_id: str, value: str) -> FeedbackRecord:
    session_id, task_id, rating, comment, created = json.loads(value[TIME_WIDTH:])
    return FeedbackRecord(
        id=feedback_id,
        session_id=session_id,
        task_id=task_id,
        user_id=user_id,
        rating=rating,
        comment=comment,
        created_time=int(created),
    )


def _task_hit(
    record: SessionRecord, task_id: str, value: str, terms: tuple[str, ...]
) -> SearchHit | None:
    """The stored task ``value`` as a match, or None (``scan.task_hit``)."""

    def load() -> tuple[str | None, Any]:
        _, message, bubbles, _ = json.loads(value[TIME_WIDTH:])
        return message, bubbles

    created = time_of(value, newest_first=False)
    return task_hit(record, task_id, created, value[TIME_WIDTH:], load, terms)


def _feedback_bounds(where: FeedbackFilter, after: tuple[int, str] | None) -> tuple[str, str]:
    """``ZRANGEBYLEX`` bounds of ``F`` for the cursor and ``since``/``until``."""
    low = "-"
    if where.until is not None:
        low = "[" + descending(where.until - 1)
    if after is not None:
        cursor = descending(after[0]) + after[1]
        if low == "-" or cursor > low[1:]:
            low = "(" + cursor
    high = "+" if where.since is None else "(" + descending(where.since - 1)
    return low, high


def _command(client: Redis) -> Callable[..., Awaitable[Any]]:
    """The client's ``execute_command`` (untyped in redis-py), typed."""
    return cast("Callable[..., Awaitable[Any]]", client.execute_command)


async def _dump(client: Redis, prefix: str) -> dict[str, Any]:
    """``RedisStore._dump`` on ``client``."""
    r: Any = client  # test-only code: redis-py's unions would only add noise
    sessions: dict[str, SessionRecord] = {}
    states: dict[str, tuple[str | None, int]] = {}
    tasks: dict[tuple[str, str], TaskRecord | None] = {}
    task_homes: dict[tuple[str, str], str] = {}
    feedback: dict[tuple[str, str], FeedbackRecord] = {}
    registry: dict[str, str] = {}
    problems: list[str] = []
    users = [
        user
        async for key in r.scan_iter(match=user_pattern(prefix), count=1000)
        if (user := user_of(prefix, str(key))) is not None
    ]
    async for key in r.scan_iter(match=f"{glob_escape(prefix)}{{i:*}}", count=1000):
        value = str(await r.get(key))
        registry[unescape(str(key)[len(prefix) + 3 : -1])] = value.partition(":")[2]
    for user in sorted(set(users)):
        keys = UserKeys.of(prefix, user)
        c, s, e, th, x, u, f, fz, fk, p = keys.fixed
        metas: dict[str, str] = await r.hgetall(c)
        listing = set(await r.zrange(s, 0, -1))
        pins = set(await r.zrange(p, 0, -1))
        scores = {str(k): float(v) for k, v in await r.zrange(u, 0, -1, withscores=True)}
        expiries = {str(k): int(v) for k, v in await r.zrange(e, 0, -1, withscores=True)}
        homes: dict[str, str] = await r.hgetall(th)
        by_session = set(await r.zrange(x, 0, -1))
        by_update = set(await r.zrange(u, 0, -1))
        records: dict[str, str] = await r.hgetall(f)
        feed = set(await r.zrange(fz, 0, -1))
        links: dict[str, str] = await r.hgetall(fk)
        for sid, meta in metas.items():
            record = _session(user, sid, meta)
            sessions[sid] = record
            k_state, k_tasks, k_listing = keys.conversation(sid)
            state = await r.get(k_state)
            states[sid] = (None if state is None else str(state), int(json.loads(meta)["v"]))
            if json.loads(meta)["k"] not in listing:
                problems.append(f"{user}/{sid}: not in the listing")
            if (json.loads(meta)["k"] in pins) != record.pinned:
                problems.append(f"{user}/{sid}: pinned {record.pinned}, P disagrees")
            if record.expires_at != expiries.get(sid):
                problems.append(f"{user}/{sid}: expiry index {expiries.get(sid)}")
            if registry.get(sid) != user:
                problems.append(f"{user}/{sid}: registry says {registry.get(sid)!r}")
            stored: dict[str, str] = await r.hgetall(k_tasks)
            task_listing = set(await r.zrange(k_listing, 0, -1))
            if state is None and (stored or task_listing):
                problems.append(f"{user}/{sid}: tasks outlive the state key")
            for tid, value in stored.items():
                tasks[user, tid] = _task(user, sid, tid, value)
                if value[:TIME_WIDTH] + tid not in task_listing:
                    problems.append(f"{user}/{sid}/{tid}: not in the task listing")
            if len(task_listing) != len(stored):
                problems.append(f"{user}/{sid}: task listing has {len(task_listing)} entries")
        for member in listing:
            if member[TIME_WIDTH:] not in metas:
                problems.append(f"{user}: listing entry {member!r} without its conversation")
        if not pins <= listing:
            problems.append(f"{user}: pinned entries {sorted(pins - listing)} not in S")
        for sid in expiries:
            if sid not in metas:
                problems.append(f"{user}: expiry of missing conversation {sid!r}")
        for tid, sid in homes.items():
            member = f"{sid}\0{tid}"
            tasks.setdefault((user, tid), None)
            task_homes[user, tid] = sid
            if sid not in metas:
                problems.append(f"{user}/{sid}/{tid}: task without its conversation")
            if member not in by_session or member not in by_update:
                problems.append(f"{user}/{sid}/{tid}: task missing from X or U")
            held = sid in sessions and sessions[sid].pinned
            if member in scores and (scores[member] == float("inf")) != held:
                problems.append(f"{user}/{sid}/{tid}: U score {scores[member]}, pinned {held}")
            stored_task = tasks[user, tid]
            if (
                not held
                and stored_task is not None
                and scores.get(member)
                not in (
                    None,
                    float(stored_task.updated_time),
                )
            ):
                problems.append(f"{user}/{sid}/{tid}: U score is not its updated_time")
            if states.get(sid, (None, 0))[0] is not None and tasks[user, tid] is None:
                problems.append(f"{user}/{sid}/{tid}: task home without the task")
        for member in by_session | by_update:
            sid, _, tid = member.partition("\0")
            if homes.get(tid) != sid:
                problems.append(f"{user}: index entry {member!r} without its task")
        for (owner, tid), task in tasks.items():
            if owner == user and task is not None and homes.get(tid) != task.session_id:
                problems.append(f"{user}/{task.session_id}/{tid}: task without its home")
        for fid, value in records.items():
            item = _feedback(user, fid, value)
            feedback[user, fid] = item
            if links.get(item.task_id) != fid:
                problems.append(f"{user}/{fid}: feedback not linked from its task")
            if homes.get(item.task_id) != item.session_id:
                problems.append(f"{user}/{fid}: feedback without its task")
            if value[:TIME_WIDTH] + fid not in feed:
                problems.append(f"{user}/{fid}: feedback not in the listing")
        if len(feed) != len(records):
            problems.append(f"{user}: feedback listing has {len(feed)} entries")
        for tid, fid in links.items():
            if fid not in records:
                problems.append(f"{user}/{tid}: link to missing feedback {fid!r}")
    for sid, owner in registry.items():
        if sessions.get(sid) is None or sessions[sid].user_id != owner:
            problems.append(f"registry entry {sid!r} of {owner!r} without its conversation")
    return {
        "sessions": sessions,
        "states": states,
        "chat_tasks": tasks,
        "task_homes": task_homes,
        "feedback": feedback,
        "registry": registry,
        "problems": problems,
    }
