"""What only the Redis store has: its key layout, Redis's own expiry, round trips, errors.

The contract itself (what every store answers) is checked by the service, API,
retention, race and property suites, which run on Redis too. This file checks what is
Redis's alone, against the real server of ``AGENTSESSION_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``; unreachable: skipped locally, a failure in CI):

* every key a script is given is in one hash slot (Redis Cluster), and ids holding
  ``{``, ``}``, ``:`` or ``%`` neither move that slot nor collide;
* a conversation's keys carry its ``expires_at`` as their Redis expiry, slid by
  every write, and an expired conversation is gone from every answer;
* every call is one round trip (one ``EVALSHA``), counted on the wire;
* failures are classified: a closed port or a full pool is ``StoreUnavailable``, a
  wrong password ``StoreMisconfigured``, a replica's ``READONLY`` ``StoreUnavailable``;
* the lease, and retention batches over many users, against the memory store's answers.

Each test works under a random key prefix of its own and deletes its keys afterwards.
Tests needing a server of their own (a password, a replica, a flushed script cache)
start ``redis-server`` on a spare port and kill it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from agentsession.common import mask_url, now_ms
from agentsession.config import RetentionConfig
from agentsession.errors import (
    ConfigError,
    IdConflict,
    SessionNotFound,
    StoreMisconfigured,
    StoreUnavailable,
)
from agentsession.retention import prune
from agentsession.search import parse_query
from agentsession.service import SessionService
from agentsession.stores.base import (
    RULES,
    Cutoffs,
    FeedbackFilter,
    FeedbackRecord,
    Holder,
    SearchHit,
    SearchQuery,
    SessionRecord,
    TaskRecord,
    Touch,
)
from agentsession.stores.memory import MemoryStore
from agentsession.stores.redis import RedisStore
from agentsession.stores.redis import store as store_module
from agentsession.stores.redis.errors import translate
from agentsession.stores.redis.keys import (
    UserKeys,
    ascending,
    descending,
    escape,
    registry_key,
    time_of,
    unescape,
)
from agentsession.stores.redis.scripts import SCRIPTS
from tests.databases import prune_all

pytestmark = pytest.mark.anyio

DAY = 86_400_000
URL = os.environ.get("AGENTSESSION_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
#: Ids that would break a naive key layout: hash-tag braces, separators, escapes.
TRICKY = ["a", "a:b", "a%3Ab", "{a}", "a}", "{", "}", "%", "%25", "a:b:c", "é{x}:%7D", "😀"]


# Servers and stores


def _reachable(url: str) -> str | None:
    """None if ``url`` answers PING, else why not (redis-py's blocking client: no loop)."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


_SERVER_PROBLEM: list[str | None] = []


@pytest.fixture
def redis_url() -> str:
    """The test server's URL; unreachable: skip locally, fail in CI."""
    if not _SERVER_PROBLEM:
        _SERVER_PROBLEM.append(_reachable(URL))
    problem = _SERVER_PROBLEM[0]
    if problem is not None:
        message = f"Redis at {mask_url(URL)} is unreachable ({problem})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must test against a real server")
        pytest.skip(message)
    return URL


def new_prefix() -> str:
    return f"agentsession-rt-{secrets.token_hex(6)}:"


async def delete_keys(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A started store under a fresh key prefix; its keys are deleted afterwards."""
    prefix = new_prefix()
    made = RedisStore(redis_url, key_prefix=prefix)
    await made.start()
    try:
        yield made
    finally:
        await made.close()
        await delete_keys(redis_url, prefix)


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client on the test server (strings decoded)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def keys_of(client: Redis, prefix: str) -> list[str]:
    return sorted([str(key) async for key in client.scan_iter(match=f"{prefix}*", count=1000)])


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def own_server(*options: str) -> Iterator[str]:
    """A ``redis-server`` of the test's own (``options`` added), killed afterwards: its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; CI must run these tests")
        pytest.skip("redis-server is not installed")
    directory = Path(tempfile.mkdtemp(prefix="agentsession-redis-rt-"))
    port = spare_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    command += ["--save", "", "--appendonly", "no", "--daemonize", "no", *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server {' '.join(options)} did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


# Records written straight to a store, with chosen times


def conversation(
    session_id: str,
    user: str,
    *,
    at: int = 1_000,
    viewed: int | None = None,
    expires: int | None = None,
    pinned: bool = False,
    name: str | None = None,
) -> SessionRecord:
    return SessionRecord(session_id, user, None, name, None, at, at, viewed, expires, pinned)


def task(
    task_id: str, session_id: str, user: str, *, at: int = 1_000, message: str = "hi"
) -> TaskRecord:
    return TaskRecord(task_id, session_id, user, message, [{"text": task_id}], {"k": [1]}, at, at)


def rating(
    feedback_id: str, session_id: str, task_id: str, user: str, *, at: int
) -> FeedbackRecord:
    return FeedbackRecord(feedback_id, session_id, task_id, user, "up", None, at)


# Recording what the store sends


class Wire:
    """Counts the round trips (packed writes) and the commands sent by any connection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.round_trips = 0
        self.commands: list[str] = []
        send, pack = AbstractConnection.send_packed_command, AbstractConnection.pack_command
        wire = self

        async def counting_send(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            wire.round_trips += 1
            await send(self, *args, **kwargs)

        def recording_pack(self: AbstractConnection, *args: Any) -> list[bytes]:
            name = args[0]
            wire.commands.append(name.decode() if isinstance(name, bytes) else str(name))
            return pack(self, *args)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)
        monkeypatch.setattr(AbstractConnection, "pack_command", recording_pack)

    def reset(self) -> None:
        self.round_trips = 0
        self.commands = []


class Scripts:
    """Records the name and keys of every script call a store makes."""

    def __init__(self, store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        one, many = store._eval, store._eval_many

        async def record_one(script: Any, keys: Any, args: Any) -> Any:
            self.calls.append((script.name, list(keys)))
            return await one(script, keys, args)

        async def record_many(calls: Any) -> Any:
            self.calls.extend((script.name, list(keys)) for script, keys, _ in calls)
            return await many(calls)

        monkeypatch.setattr(store, "_eval", record_one)
        monkeypatch.setattr(store, "_eval_many", record_many)


async def full_flow(store: RedisStore, users: list[str], session_ids: list[str]) -> None:
    """Every store method, on each user's conversations, with the given ids."""
    now = now_ms()
    await write_everything(store, users, session_ids, now)
    await prune_everything(store, now)


async def write_everything(
    store: RedisStore, users: list[str], session_ids: list[str], now: int
) -> None:
    """Every write and read of the store, on each user's conversations."""
    for user in users:
        for sid in session_ids:
            sid = f"{sid}|{user}"  # conversation ids are global
            await store.insert_session(conversation(sid, user, at=now, expires=now + DAY))
            assert await store.get_session(user, sid, now) is not None
            await store.update_session(
                user, sid, now, now + DAY, name="n", rename=True, viewed=True
            )
            state = await store.load_state(user, sid, now)
            assert state == ("{}", 0)
            assert await store.write_state(user, sid, now, now + DAY, '{"a":1}', 0) is True
            saved = await store.save_task(task(sid, sid, user, at=now), Touch(now + DAY, True))
            assert saved is not None
            assert len(await store.list_tasks(user, sid, now, 10, None) or []) == 1
            assert await store.save_feedback(rating(f"f{sid}", sid, sid, user, at=now), now)
        first = f"{session_ids[0]}|{user}"
        pinned = await store.update_session(user, first, now, now + DAY, pinned=True)
        assert pinned is not None
        assert pinned.pinned
        assert len(await store.list_sessions(user, now, 100, None)) == len(session_ids)
        only = await store.list_sessions(user, now, 100, None, pinned=True)
        assert [item.id for item in only] == [first]
        others = await store.list_sessions(user, now, 100, None, pinned=False)
        assert len(others) == len(session_ids) - 1
        hits = await store.search(user, SearchQuery("hi", ("hi",)), now, 100, None)
        assert len(hits) == len(session_ids)
        assert len(await store.list_feedback(user, FeedbackFilter(), 100, None)) == len(session_ids)
        assert await store.list_feedback(
            user, FeedbackFilter(task_id=f"{session_ids[0]}|{user}"), 5, None
        )
        await store.delete_session(user, f"{session_ids[-1]}|{user}", now)


async def prune_everything(store: RedisStore, now: int) -> None:
    """Every retention rule and the lease, deleting everything ``write_everything`` wrote."""
    feedback_only = Cutoffs(now + 2 * DAY, None, now + DAY, None)
    later = Cutoffs(now + 2 * DAY, now + DAY, now + DAY, now + DAY)
    for rule, cut in [("feedback", feedback_only), *((rule, later) for rule in RULES)]:
        await store.count_prunable(rule, cut)
        position: object | None = None
        while True:
            _, position = await store.prune_batch(rule, cut, position, 2)
            if position is None:
                break
    assert await store.take_lease("retention", "me", now + 1000, now)
    await store.release_lease("retention", "me", now)
    assert await store.lease_holder("retention") == Holder("me", now)


# Key layout


def test_escaping_is_injective_and_keeps_the_hash_tag() -> None:
    escaped = [escape(value) for value in TRICKY]
    assert len(set(escaped)) == len(TRICKY)
    assert [unescape(value) for value in escaped] == TRICKY
    for value in escaped:
        assert not set(value) & set("{}:")
    for user in TRICKY:
        keys = UserKeys.of("p:", user)
        for key in keys.with_conversations(TRICKY):
            # Redis's rule: the first '{' up to the next '}' is the hash tag.
            start = key.index("{")
            assert key[start : key.index("}", start) + 1] == f"{{u:{escape(user)}}}"
    # Every key of every user and conversation is distinct.
    every = [k for u in TRICKY for k in UserKeys.of("p:", u).with_conversations(TRICKY)]
    assert len(set(every)) == len(every)
    registries = {registry_key("p:", sid) for sid in TRICKY}
    assert len(registries) == len(TRICKY)


def test_sort_key_encodings_keep_the_order_in_bytes() -> None:
    times = [-(2**63), -5, -1, 0, 1, 999, 1_700_000_000_000, 2**53, 2**63 - 1]
    up = [ascending(t) for t in times]
    down = [descending(t) for t in times]
    assert up == sorted(up)
    assert len(set(up)) == len(up)
    assert down == sorted(down, reverse=True)
    assert all(len(value) == 16 for value in up + down)
    assert [time_of(value, newest_first=False) for value in up] == times
    assert [time_of(value, newest_first=True) for value in down] == times


async def test_every_script_call_stays_in_one_hash_slot(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Scripts(store, monkeypatch)
    await full_flow(store, ["plain", *TRICKY[1:5]], ["s", "s:1", "{s}", "s%"])
    names = {name for name, _ in recorded.calls}
    # reclaim_id (one key) runs only after a failed writer: see the registry test.
    assert names == set(SCRIPTS) - {"reclaim_id"}, set(SCRIPTS) - names
    for name, keys in recorded.calls:
        assert keys, name
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) == 1, (name, keys)
        if len(keys) > 1:  # a user script: all of one user's hash tag
            tags = {re.search(r"\{[^}]*\}", key).group() for key in keys}  # type: ignore[union-attr]
            assert len(tags) == 1, (name, keys)


async def test_the_keys_follow_the_documented_layout(store: RedisStore, raw: Redis) -> None:
    await write_everything(store, ["alice", "b{o}b:%"], ["x", "y{z}:%"], now_ms())
    await store.take_lease("retention", "me", 1, 0)
    prefix = re.escape(store.key_prefix)
    tag = r"\{u:[^{}:]+\}"
    layout = [
        rf"^{prefix}{tag}:(c|S|E|th|X|U|f|F|fk|P)$",
        rf"^{prefix}{tag}:(s|t|T):[^{{}}:]+$",
        rf"^{prefix}\{{i:[^{{}}:]+\}}$",
        rf"^{prefix}lease:[^{{}}:]+$",
    ]
    found = await keys_of(raw, store.key_prefix)
    assert found
    for key in found:
        assert any(re.match(pattern, key) for pattern in layout), key
    assert f"{store.key_prefix}{{u:b%7Bo%7Db%3A%25}}:c" in found


async def test_ids_with_braces_colons_and_percents_never_collide(store: RedisStore) -> None:
    now = now_ms()
    for user in TRICKY:
        for sid in TRICKY:
            await store.insert_session(conversation(f"{user}/{sid}", user, at=now))
            saved = await store.save_task(task(sid, f"{user}/{sid}", user, at=now))
            assert saved is not None
            assert saved.id == sid
    for user in TRICKY:
        listed = await store.list_sessions(user, now, 1000, None)
        assert sorted(item.id for item in listed) == sorted(f"{user}/{sid}" for sid in TRICKY)
        for sid in TRICKY:
            tasks = await store.list_tasks(user, f"{user}/{sid}", now, 10, None)
            assert [(t.id, t.user_id) for t in tasks or []] == [(sid, user)]
    dump = await store._dump()
    assert dump["problems"] == []
    assert len(dump["sessions"]) == len(TRICKY) ** 2


async def test_pages_order_ids_byte_by_byte(store: RedisStore) -> None:
    ids = ["b", "a", "é", "Z", "😀", "a:b", "a{", "ab"]
    for sid in ids:
        await store.insert_session(conversation(sid, "pager", at=5_000))
        await store.save_task(task(sid, ids[0], "pager", at=5_000))
    expected = sorted(ids)  # code point order is UTF-8 byte order
    for limit in (1, 2, 3, 100):
        seen: list[str] = []
        after: tuple[int, str] | None = None
        while True:
            page = await store.list_sessions("pager", 6_000, limit, after)
            assert len(page) <= limit
            seen += [item.id for item in page]
            if len(page) < limit:
                break
            after = page[-1].sort_key
        assert seen == expected, limit
        tasks: list[str] = []
        task_after: tuple[int, str] | None = None
        while True:
            found = await store.list_tasks("pager", ids[0], 6_000, limit, task_after)
            assert found is not None
            tasks += [item.id for item in found]
            if len(found) < limit:
                break
            task_after = found[-1].sort_key
        assert tasks == expected, limit


# Redis's own expiry


async def test_writes_give_the_keys_the_conversations_expiry(store: RedisStore, raw: Redis) -> None:
    service = SessionService(store, ttl=3600)
    await service.start()
    record = await service.create_session("ttl-user")
    await service.save_task("ttl-user", record.id, "t1", message_bubbles=["hi"])
    keys = UserKeys.of(store.key_prefix, "ttl-user").conversation(record.id)
    expires = (await service.get_session("ttl-user", record.id)).expires_at
    assert expires is not None
    for key in keys:
        assert await raw.pexpiretime(key) == expires, key
    await asyncio.sleep(0.01)
    for touch in (
        lambda: service.mark_viewed("ttl-user", record.id),
        lambda: service.rename_session("ttl-user", record.id, "renamed"),
        lambda: service.save_task("ttl-user", record.id, "t2"),
    ):
        await touch()
        slid = (await service.get_session("ttl-user", record.id)).expires_at
        assert slid is not None
        assert slid >= expires
        for key in keys:
            assert await raw.pexpiretime(key) == slid, key
        expires = slid
    state = await service.state("ttl-user", record.id)
    await state.set("k", "v")
    slid = (await service.get_session("ttl-user", record.id)).expires_at
    assert [await raw.pexpiretime(key) for key in keys] == [slid] * 3
    # Without a TTL the keys are kept for ever (PERSIST).
    endless = SessionService(store)
    await endless.mark_viewed("ttl-user", record.id)
    assert [await raw.pttl(key) for key in keys] == [-1, -1, -1]


async def test_an_expired_conversation_is_gone_from_redis_and_every_answer(
    store: RedisStore, raw: Redis
) -> None:
    service = SessionService(store, ttl=1)
    await service.start()
    user = "expiring"
    gone = await service.create_session(user, session_id="gone:{1}")
    await service.save_task(user, gone.id, "t", message_bubbles=["x"])
    await service.add_feedback(user, gone.id, "t", "up")
    keys = UserKeys.of(store.key_prefix, user).conversation(gone.id)
    assert 0 < await raw.pttl(keys[0]) <= 1000
    await asyncio.sleep(1.2)
    kept = await service.create_session(user)

    assert [await raw.exists(key) for key in keys] == [0, 0, 0]  # Redis freed them
    assert [item.id for item in (await service.list_sessions(user)).items] == [kept.id]
    with pytest.raises(SessionNotFound):
        await service.get_session(user, gone.id)
    with pytest.raises(SessionNotFound):
        await service.save_task(user, gone.id, "t2")
    # Its id stays taken, and its feedback listed, until the retention job runs.
    with pytest.raises(IdConflict):
        await service.create_session("someone-else", session_id=gone.id)
    assert len((await service.list_feedback(user)).items) == 1
    cut = Cutoffs(now_ms(), None, None, None)
    assert await store.count_prunable("expired_sessions", cut) == 1
    assert await store.prune_batch("expired_sessions", cut, None, 10) == (1, None)
    assert (await service.list_feedback(user)).items == []
    dump = await store._dump()
    assert dump["problems"] == []
    assert set(dump["sessions"]) == {kept.id}
    again = await service.create_session("someone-else", session_id=gone.id)
    assert again.id == gone.id


async def test_an_expiry_already_past_on_redis_keeps_the_keys_a_while(
    store: RedisStore, raw: Redis
) -> None:
    """A write whose expires_at Redis's clock has passed (history, clock skew) does not
    make Redis delete the keys at once: the contract's checks at ``now`` decide."""
    now = now_ms()
    await store.insert_session(conversation("past", "hist", at=now - DAY, expires=now - 1000))
    assert await store.get_session("hist", "past", now - DAY) is not None
    assert await store.get_session("hist", "past", now) is None
    pttl = await raw.pttl(UserKeys.of(store.key_prefix, "hist").conversation("past")[0])
    assert store_module.EXPIRED_FLOOR_MS - 5_000 < pttl <= store_module.EXPIRED_FLOOR_MS


# One round trip per call


async def test_every_call_is_one_round_trip(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = now_ms()
    user, sid = "counted", "c-1"
    wire = Wire(monkeypatch)
    await store.get_session(user, "warm-up", now)  # a pooled connection exists

    async def count(call: Any) -> tuple[int, list[str]]:
        wire.reset()
        await call
        return wire.round_trips, wire.commands

    assert await count(
        store.insert_session(conversation(sid, user, at=now, expires=now + DAY))
    ) == (
        2,
        ["EVALSHA", "EVALSHA"],
    )
    one = (1, ["EVALSHA"])
    assert await count(store.get_session(user, sid, now)) == one
    assert await count(store.list_sessions(user, now, 10, None)) == one
    assert await count(store.update_session(user, sid, now, now + DAY, viewed=True)) == one
    assert await count(store.load_state(user, sid, now)) == one
    assert await count(store.write_state(user, sid, now, now + DAY, "{}", 0)) == one
    assert await count(store.write_state(user, sid, now, now + DAY, "{}", 0)) == one  # lost
    assert await count(store.save_task(task("t", sid, user, at=now), Touch(now + DAY, True))) == one
    assert await count(store.list_tasks(user, sid, now, 10, None)) == one
    assert await count(store.save_feedback(rating("f", sid, "t", user, at=now), now)) == one
    assert await count(store.list_feedback(user, FeedbackFilter(rating="up"), 10, None)) == one
    assert await count(store.update_session(user, sid, now, now + DAY, pinned=True)) == one
    assert await count(store.list_sessions(user, now, 10, None, pinned=True)) == one
    # A search of a small user: one page of conversations, one of their tasks.
    query = SearchQuery("hi", ("hi",))
    assert await count(store.search(user, query, now, 10, None)) == (2, ["EVALSHA"] * 2)
    assert await count(store.take_lease("l", "me", now + 10, now)) == one
    assert await count(store.release_lease("l", "me", now)) == one
    assert await count(store.lease_holder("l")) == (1, ["HMGET"])
    assert await count(store.delete_session(user, "missing", now)) == one
    assert await count(store.delete_session(user, sid, now)) == (2, ["EVALSHA", "EVALSHA"])


async def test_a_lost_script_cache_costs_one_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    with own_server() as url:
        store = RedisStore(url, key_prefix="x:")
        await store.start()
        try:
            client = Redis.from_url(url)
            await client.script_flush()
            await client.aclose()
            wire = Wire(monkeypatch)
            assert await store.get_session("u", "s", 0) is None
            assert wire.commands == ["EVALSHA", "EVAL"]
            wire.reset()
            assert await store.get_session("u", "s", 0) is None
            assert wire.commands == ["EVALSHA"]  # EVAL cached it again
        finally:
            await store.close()


# Connections and errors


async def test_nothing_connects_before_the_first_call_and_close_can_be_undone(
    store: RedisStore,
) -> None:
    idle = RedisStore(f"redis://127.0.0.1:{spare_port()}/0")  # nobody listens there
    assert idle._redis is None
    await store.close()
    assert store._redis is None
    await store.start()
    assert await store.get_session("u", "s", 0) is None
    await store.close()
    assert await store.get_session("u", "s", 0) is None  # used again: reconnects


async def test_a_unix_socket_url() -> None:
    directory = Path(tempfile.mkdtemp(prefix="agentsession-sock-"))
    path = directory / "redis.sock"
    try:
        # The socket exists once the server listens on TCP (own_server waits for that).
        with own_server("--unixsocket", str(path), "--unixsocketperm", "700"):
            store = RedisStore(f"unix://{path}?db=1", key_prefix="p:")
            await store.start()
            await store.insert_session(conversation("s", "u"))
            assert await store.get_session("u", "s", 1_000) is not None
            await store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_a_closed_port_is_unavailable_at_once() -> None:
    url = f"redis://user:hunter2@127.0.0.1:{spare_port()}/0"
    store = RedisStore(url)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await store.start()
    assert time.monotonic() - started < 3
    assert not isinstance(raised.value, StoreMisconfigured)
    assert "hunter2" not in str(raised.value)
    assert "redis://user:***@127.0.0.1" in str(raised.value)
    with pytest.raises(StoreUnavailable):
        await store.get_session("u", "s", 0)
    await store.close()


async def test_a_full_pool_waits_then_is_unavailable(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "POOL_TIMEOUT", 0.3)
    store = RedisStore(redis_url, pool_size=1, key_prefix=new_prefix())
    await store.start()
    pool = store._client().connection_pool
    held = await pool.get_connection()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="No connection available"):
            await store.get_session("u", "s", 0)
        assert 0.25 < time.monotonic() - started < 3
    finally:
        await pool.release(held)
    assert await store.get_session("u", "s", 0) is None
    await store.close()


async def test_a_wrong_password_is_misconfigured() -> None:
    with own_server("--requirepass", "right") as url:
        for bad in (
            url.replace("redis://", "redis://:wrong@"),
            url.replace("redis://", "redis://default:wrong@"),
            url,  # no password at all: NOAUTH
        ):
            store = RedisStore(bad)
            with pytest.raises(StoreMisconfigured) as raised:
                await store.start()
            assert isinstance(raised.value, ConfigError)
            assert "session_service.database_url" in str(raised.value)
            assert "wrong" not in str(raised.value)
            await store.close()
        good = RedisStore(url.replace("redis://", "redis://:right@"), key_prefix="p:")
        await good.start()
        assert await good.get_session("u", "s", 0) is None
        await good.close()


async def test_a_user_without_rights_is_misconfigured() -> None:
    with own_server() as url:
        admin = Redis.from_url(url)
        await admin.execute_command("ACL", "SETUSER", "weak", "on", ">pw", "~*", "+ping", "+script")
        await admin.aclose()
        store = RedisStore(url.replace("redis://", "redis://weak:pw@"), key_prefix="p:")
        await store.start()
        with pytest.raises(StoreMisconfigured, match=r"NOPERM|permission"):
            await store.get_session("u", "s", 0)
        await store.close()


async def test_a_missing_database_number_is_misconfigured(redis_url: str) -> None:
    store = RedisStore(redis_url.rsplit("/", 1)[0] + "/100000")
    with pytest.raises(StoreMisconfigured, match="DB index"):
        await store.start()
    await store.close()


async def test_a_replica_after_failover_is_unavailable_for_writes() -> None:
    # A replica of a primary that is gone: it serves reads, refuses writes (READONLY).
    with own_server("--replicaof", "127.0.0.1", str(spare_port())) as url:
        store = RedisStore(url, key_prefix="p:")
        await store.start()
        assert await store.get_session("u", "s", 0) is None
        with pytest.raises(StoreUnavailable, match="read only replica") as raised:
            await store.insert_session(conversation("s", "u"))
        assert not isinstance(raised.value, StoreMisconfigured)
        await store.close()


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (redis_errors.ConnectionError("Connection refused"), StoreUnavailable),
        (redis_errors.TimeoutError("Timeout reading from socket"), StoreUnavailable),
        (redis_errors.BusyLoadingError("Redis is loading the dataset in memory"), StoreUnavailable),
        (
            redis_errors.ReadOnlyError("You can't write against a read only replica."),
            StoreUnavailable,
        ),
        (redis_errors.ClusterDownError("The cluster is down"), StoreUnavailable),
        (redis_errors.TryAgainError("Multiple keys request during rehashing"), StoreUnavailable),
        (redis_errors.MasterDownError("Link with MASTER is down"), StoreUnavailable),
        (
            redis_errors.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
            StoreUnavailable,
        ),
        (
            redis_errors.ResponseError(
                "Error running script (call to f_1): @user_script:9: "
                "READONLY You can't write against a read only replica."
            ),
            StoreUnavailable,
        ),
        (
            redis_errors.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
            StoreUnavailable,
        ),
        (redis_errors.ResponseError("BUSY Redis is busy running a script."), StoreUnavailable),
        (ConnectionRefusedError(111, "Connection refused"), StoreUnavailable),
        (TimeoutError(), StoreUnavailable),
        (redis_errors.AuthenticationError("invalid username-password pair"), StoreMisconfigured),
        (redis_errors.AuthorizationError("not allowed"), StoreMisconfigured),
        (redis_errors.NoPermissionError("this user has no permissions"), StoreMisconfigured),
        (
            redis_errors.ResponseError("WRONGPASS invalid username-password pair"),
            StoreMisconfigured,
        ),
        (redis_errors.ResponseError("NOAUTH Authentication required."), StoreMisconfigured),
        (redis_errors.ResponseError("ERR DB index is out of range"), StoreMisconfigured),
        (
            redis_errors.ResponseError(
                "ERR user_script:3: Script attempted to access a non local key"
            ),
            None,
        ),
        (
            redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
            None,
        ),
        (ValueError("a bug"), None),
    ],
)
def test_errors_are_classified(error: BaseException, kind: type[Exception] | None) -> None:
    translated = translate(error, "redis://h:6379/0")
    if kind is None:
        assert translated is None
        return
    assert type(translated) is kind
    assert str(translated).startswith("redis://h:6379/0: ")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379/0", "redis://"),
        ("redis://127.0.0.1:notaport/0", "Port"),
        ("redis://127.0.0.1:6379/zero", "database number"),
        ("redis:///0", "host is missing"),
        ("unix://", "socket's path"),
        ("redis://127.0.0.1:6379/0?nonsense=1", "unknown parameter"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
        ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "unknown parameter"),
        ("redis://u:hunter2@127.0.0.1:99999/0", "Port"),
    ],
)
def test_bad_urls_are_config_errors_with_the_password_masked(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RedisStore(url)
    assert "session_service.database_url" in str(raised.value)
    assert reason in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_url_forms_and_masking() -> None:
    for url in (
        "redis://127.0.0.1:6379/0",
        "redis://user:pw@127.0.0.1/2",
        "rediss://:pw@cache.example:6380/0?ssl_cert_reqs=required",
        "unix:///run/redis.sock?db=3",
        "REDIS://localhost",
    ):
        RedisStore(url)  # accepted, nothing connects
    assert mask_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert mask_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("unix:///s.sock?db=0&password=pw") == "unix:///s.sock?db=0&password=***"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"
    assert "pw" not in repr(RedisStore("redis://user:pw@127.0.0.1/2"))


def test_a_key_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ConfigError, match="key_prefix"):
        RedisStore("redis://127.0.0.1", key_prefix="app{1}:")


def test_without_redis_py_the_store_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'agentsession[redis]'")):
        RedisStore("redis://:secret@127.0.0.1:6379/0")


# Conversation ids are global


async def test_a_claim_left_by_a_failed_writer_is_taken_over_once_old(
    store: RedisStore, raw: Redis
) -> None:
    key = registry_key(store.key_prefix, "orphan")
    redis_now = int((await raw.time())[0]) * 1000
    await raw.set(key, f"{redis_now}:ghost")  # a fresh claim: its writer may still come
    with pytest.raises(IdConflict):
        await store.insert_session(conversation("orphan", "alice"))
    old = redis_now - store_module.ORPHAN_CLAIM_MS - 1000
    await raw.set(key, f"{old}:ghost")  # the ghost never wrote its conversation
    await store.insert_session(conversation("orphan", "alice"))
    assert (await raw.get(key) or "").endswith(":alice")
    assert await store.get_session("alice", "orphan", 1_000) is not None
    # An old claim whose owner has the conversation (even expired) is no orphan.
    await raw.set(key, f"{old}:alice")
    with pytest.raises(IdConflict):
        await store.insert_session(conversation("orphan", "bob"))


# The lease


async def test_the_lease(store: RedisStore) -> None:
    assert await store.lease_holder("test") is None
    assert await store.take_lease("test", "a", 1000, 0)
    assert await store.lease_holder("test") == Holder("a", 1000)
    assert await store.take_lease("test", "a", 1000, 10)  # renewed, same values
    assert await store.take_lease("test", "a", 1500, 20)  # renewed
    assert not await store.take_lease("test", "b", 2000, 30)  # a holds it
    assert not await store.take_lease("test", "b", 2000, 1499)
    assert await store.lease_holder("test") == Holder("a", 1500)
    assert await store.take_lease("test", "b", 2000, 1500)  # a's expired at 1500
    assert not await store.take_lease("test", "a", 2500, 1600)  # a lost it
    await store.release_lease("test", "a", 1700)  # not a's to release
    assert await store.lease_holder("test") == Holder("b", 2000)
    await store.release_lease("test", "b", 1700)
    assert await store.lease_holder("test") == Holder("b", 1700)  # kept after it ends
    assert await store.take_lease("test", "a", 2500, 1700)
    assert await store.lease_holder("test") == Holder("a", 2500)
    assert await store.lease_holder("other") is None

    racers = [store.take_lease("race", f"owner-{n}", 10_000, 0) for n in range(20)]
    assert sum(await asyncio.gather(*racers)) == 1


# Search and pins


async def monitored(url: str, prefix: str, call: Awaitable[Any]) -> tuple[Any, list[str]]:
    """``call``'s result, and each command the server ran meanwhile that names a key
    under ``prefix`` (MONITOR also shows the commands scripts run)."""
    watcher = Redis.from_url(url, decode_responses=True)
    other = Redis.from_url(url, decode_responses=True)
    marker = f"{prefix}monitor-end-{secrets.token_hex(4)}"
    lines: list[str] = []
    try:
        async with watcher.monitor() as monitor:
            result = await call
            await other.get(marker)
            while True:
                command = str((await monitor.next_command())["command"])
                if marker in command:
                    return result, lines
                if prefix in command:
                    lines.append(command)
    finally:
        await watcher.aclose()
        await other.aclose()


async def test_search_reads_only_the_users_own_keys(store: RedisStore, redis_url: str) -> None:
    now = now_ms()
    users = ["alice", "bob", "a{l}ice:%"]
    for user in users:
        for c in range(3):
            sid = f"{user}/{c}"
            await store.insert_session(conversation(sid, user, at=now, name="deploy plan"))
            for t in range(4):
                item = task(f"t{c}{t}", sid, user, at=now + t, message="deploy the app")
                assert await store.save_task(item) is not None
    query = SearchQuery("deploy", ("deploy",))
    for user in users:
        hits, lines = await monitored(
            redis_url, store.key_prefix, store.search(user, query, now, 100, None)
        )
        assert len(hits) == 3 + 12
        assert {hit.session_id.partition("/")[0] for hit in hits} == {user}
        own = f"{store.key_prefix}{{u:{escape(user)}}}"
        assert any(line.startswith("ZRANGEBYLEX") and own in line for line in lines)
        assert any(line.startswith("HMGET") and own in line for line in lines)
        for line in lines:
            # Every key under the prefix this search touched is one of the user's.
            assert line.count(store.key_prefix) == line.count(own), line


async def test_search_in_small_pages_agrees_with_the_memory_store(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny ``search_tasks`` and conversation pages (so that every resume path runs)
    give the memory store's hits, page after page."""
    monkeypatch.setattr(store_module, "SEARCH_GROUP", 2)
    monkeypatch.setattr(store_module, "SEARCH_TASKS", 3)
    monkeypatch.setattr(store_module, "SEARCH_BYTES", 300)
    now = now_ms()
    rng = random.Random(11)
    vocabulary = ["deploy", "deployment", "app", "apple", "Δέλτα", "日本語", "plan"]
    memory = MemoryStore()
    for user in ("searcher", "other"):
        for c in range(7):
            name = rng.choice([None, "deploy plan", "app", "Δέλτα deploy deploy"])
            expires = now - 1 if c == 5 else None
            record = conversation(
                f"{user}-{c}", user, at=now - c, expires=expires, name=name, pinned=c == 2
            )
            for target in (store, memory):
                await target.insert_session(record)
            for t in range(rng.randint(0, 8)):
                words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 6)))
                item = task(f"t{c}-{t}", record.id, user, at=now - rng.randint(0, 3), message=words)
                for target in (store, memory):
                    await target.save_task(item)
    recorded = Scripts(store, monkeypatch)
    for text in ("deploy", "dep app", "app", "δέλ", "日本", "plan deploy", "nothing"):
        query = SearchQuery(text, parse_query(text))
        for limit in (1, 4, 100):
            pages: dict[str, list[SearchHit]] = {}
            for name, target in (("redis", store), ("memory", memory)):
                found: list[SearchHit] = []
                after = None
                while True:
                    page = await target.search("searcher", query, now, limit, after)
                    found += page
                    if len(page) < limit:
                        break
                    after = page[-1].sort_key
                pages[name] = found
            assert pages["redis"] == pages["memory"], (text, limit)
            assert all(hit.session_id.startswith("searcher-") for hit in pages["redis"])
            assert all(hit.session_id != "searcher-5" for hit in pages["redis"])  # expired
    calls = [name for name, _ in recorded.calls]
    assert calls.count("search_tasks") > calls.count("list_sessions") > 7


async def test_pinning_rescores_the_tasks_for_retention(store: RedisStore, raw: Redis) -> None:
    now = now_ms()
    user = "pinner"
    await store.insert_session(conversation("kept", user, at=now - 60 * DAY))
    for t in range(5):
        await store.save_task(task(f"t{t}", "kept", user, at=now - 40 * DAY - t))
    u_key = UserKeys.of(store.key_prefix, user).fixed[5]
    scores = dict(await raw.zrange(u_key, 0, -1, withscores=True))
    assert sorted(scores.values()) == [now - 40 * DAY - t for t in range(4, -1, -1)]
    cut = Cutoffs(now, now - 10 * DAY, None, now - 30 * DAY)

    pinned = await store.update_session(user, "kept", now, None, pinned=True)
    assert pinned is not None
    assert pinned.pinned
    assert pinned.updated_time == now - 60 * DAY  # pinning is not an update
    assert set(dict(await raw.zrange(u_key, 0, -1, withscores=True)).values()) == {float("inf")}
    await store.save_task(task("t-new", "kept", user, at=now - 20 * DAY))
    assert await raw.zscore(u_key, "kept\0t-new") == float("inf")
    for rule in ("chat_tasks", "idle_sessions"):
        assert await store.count_prunable(rule, cut) == 0
    # One batch, even with a limit below the pinned tasks: none is a candidate.
    assert await store.prune_batch("chat_tasks", cut, None, 1) == (0, None)
    # The idle rule looks at the pinned conversation (a candidate by its times) and keeps it.
    assert await store.prune_batch("idle_sessions", cut, None, 1) == (0, ANY)
    assert await store.prune_batch("idle_sessions", cut, None, 2) == (0, None)
    assert (await store._dump())["problems"] == []

    await store.update_session(user, "kept", now, None, pinned=False)
    restored = dict(await raw.zrange(u_key, 0, -1, withscores=True))
    assert restored == {**scores, "kept\0t-new": float(now - 20 * DAY)}
    assert (await store._dump())["problems"] == []
    assert await store.count_prunable("chat_tasks", cut) == 6
    assert await store.count_prunable("idle_sessions", cut) == 1
    assert (await prune_all(store, "chat_tasks", cut, 2))[0] == 6
    assert await store.count_prunable("idle_sessions", cut) == 1


# Retention across many users, against the memory store


def population(
    seed: int, now: int
) -> tuple[list[SessionRecord], list[TaskRecord], list[FeedbackRecord]]:
    """Many users' conversations, tasks and feedback, of every age, for every rule."""
    rng = random.Random(seed)
    sessions: list[SessionRecord] = []
    tasks: list[TaskRecord] = []
    ratings: list[FeedbackRecord] = []
    for u in range(40):
        user = f"user-{u}:{{x}}%" if u % 3 == 0 else f"user-{u}"
        for c in range(rng.randint(0, 4)):
            sid = f"s-{u}-{c}"
            updated = now - rng.choice([1, 5, 20, 40, 60]) * DAY
            viewed = rng.choice([None, now - DAY, now - 50 * DAY])
            expires = rng.choice([None, None, now - 3 * DAY, now + DAY])
            pinned = (u + c) % 4 == 0  # kept by the idle and chat-task rules
            sessions.append(
                conversation(sid, user, at=updated, viewed=viewed, expires=expires, pinned=pinned)
            )
            for t in range(rng.randint(0, 3)):
                at = now - rng.choice([0, 2, 12, 45]) * DAY - t
                tasks.append(task(f"t-{u}-{c}-{t}", sid, user, at=at))
                if rng.random() < 0.6:
                    created = now - rng.choice([1, 6, 30]) * DAY - t
                    ratings.append(
                        rating(f"f-{u}-{c}-{t}", sid, f"t-{u}-{c}-{t}", user, at=created)
                    )
    return sessions, tasks, ratings


async def fill(store: Any, now: int) -> list[bool]:
    """Write ``population``; which of its tasks and feedback the store took (a task
    saved after its conversation's expiry is refused, like a rating of such a task)."""
    sessions, tasks, ratings = population(7, now)
    taken: list[bool] = []
    for record in sessions:
        await store.insert_session(record)
    for item in tasks:
        taken.append(await store.save_task(item) is not None)
    for rated in ratings:
        taken.append(await store.save_feedback(rated, rated.created_time) is not None)
    return taken


async def everything(store: Any, users: list[str], now: int) -> dict[str, set[str]]:
    """Every conversation, task and feedback id the users have (expired ones included)."""
    found: dict[str, set[str]] = {"sessions": set(), "chat_tasks": set(), "feedback": set()}
    if isinstance(store, RedisStore):
        dump = await store._dump()
        assert dump["problems"] == []
        found["sessions"] = set(dump["sessions"])
        found["chat_tasks"] = {tid for _, tid in dump["task_homes"]}
        found["feedback"] = {fid for _, fid in dump["feedback"]}
        return found
    assert isinstance(store, MemoryStore)
    for session_id, item in store._conversations.items():
        found["sessions"].add(session_id)
        found["chat_tasks"].update(item.tasks)
        found["feedback"].update(record.id for record in item.feedback.values())
    return found


async def test_retention_batches_walk_many_users_and_agree_with_the_memory_store(
    store: RedisStore,
) -> None:
    now = now_ms()
    memory = MemoryStore()
    taken = await fill(store, now)
    assert taken == await fill(memory, now)
    assert taken.count(True) > 50
    users = sorted({record.user_id for record in population(7, now)[0]})
    cut = Cutoffs(now, now - 10 * DAY, now - 5 * DAY, now - 30 * DAY)
    assert await everything(store, users, now) == await everything(memory, users, now)
    for rule in RULES:
        expected = await memory.count_prunable(rule, cut)
        assert await store.count_prunable(rule, cut) == expected, rule
        deleted, batches = await prune_all(store, rule, cut, 3)
        assert deleted == (await memory.prune_batch(rule, cut, None, 3))[0], rule
        assert batches >= deleted / 3
        assert await everything(store, users, now) == await everything(memory, users, now), rule
    for rule in RULES:
        assert await store.count_prunable(rule, cut) == 0, rule


async def test_prune_runs_on_redis_with_its_lease(store: RedisStore) -> None:
    now = now_ms()
    memory = MemoryStore()
    assert await fill(store, now) == await fill(memory, now)
    retention = RetentionConfig(
        task_retention_days=10, feedback_retention_days=5, session_retention_days=30, batch_size=2
    )
    async with SessionService(memory) as reference:
        expected = await prune(reference, retention=retention, now=now, pause=0)
    service = SessionService(store)
    report = await prune(service, retention=retention, now=now, pause=0)
    assert report.counts == expected.counts
    assert report.complete
    assert report.skipped is None
    holder = await store.lease_holder("retention")
    assert holder is not None
    assert holder.expires_at <= now_ms()
    assert (await prune(service, retention=retention, now=now, pause=0)).total == 0


# Concurrency


async def test_concurrent_writers_lose_nothing(store: RedisStore) -> None:
    service = SessionService(store)
    record = await service.create_session("busy")
    saves = [service.save_task("busy", record.id, "same", message_bubbles=[n]) for n in range(20)]
    await asyncio.gather(*saves)
    assert len((await service.list_tasks("busy", record.id)).items) == 1

    async def write(n: int) -> None:
        await (await service.state("busy", record.id)).set(f"k{n}", n)

    await asyncio.gather(*(write(n) for n in range(50)))
    state = await service.state("busy", record.id)
    assert dict(await state.items()) == {f"k{n}": n for n in range(50)}
    assert (await store._dump())["problems"] == []
