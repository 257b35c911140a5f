"""Revocation and a user's data (export, import, erase) on Redis: scripts and their calls.

Revocations live in two sorted sets of their own hash slot, ``P{r}:at`` (member
``<kind>:<subject>``, score ``revoked_at``) and ``P{r}:until`` (score ``keep_until``,
only for those the store may forget); one script records one, keeping the later
times, and forgets a few expired ones. A user's data is read with plain commands of
the user's slot; an import claims the conversation ids in the registry, then writes
each conversation with its tasks and feedback in one script that first checks every
id (nothing is written on a conflict); a failure part-way deletes what was written.
An erase step drops up to a batch of tasks of a few conversations, and the
conversations whose tasks are all gone, in one script.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from agentsession.common import dump_json
from agentsession.errors import IdConflict
from agentsession.stores.base import Revocation, StoredSession, TaskRecord, UserRows
from agentsession.stores.redis.keys import ascending, descending, registry_key
from agentsession.stores.redis.scripts import _USER, Script

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentsession.stores.redis.store import RedisStore

__all__ = [
    "erase_batch",
    "export_sessions",
    "export_tasks",
    "import_rows",
    "list_revocations",
    "revoke",
]

#: Conversations one erase step looks at.
ERASE_CONVERSATIONS: Final = 16

# KEYS: at, until. ARGV: member, revoked_at, keep_until ('' none), now.
_REVOKE = Script(
    "revoke",
    r"""
local member = ARGV[1]
local at = tonumber(ARGV[2])
local old = redis.call('ZSCORE', KEYS[1], member)
if old and tonumber(old) > at then at = tonumber(old) end
redis.call('ZADD', KEYS[1], at, member)
local oldkeep = redis.call('ZSCORE', KEYS[2], member)
if ARGV[3] == '' or (old and not oldkeep) then
  redis.call('ZREM', KEYS[2], member)
else
  local keep = tonumber(ARGV[3])
  if oldkeep and tonumber(oldkeep) > keep then keep = tonumber(oldkeep) end
  redis.call('ZADD', KEYS[2], keep, member)
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 100)
for _, m in ipairs(gone) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
end
return 1
""",
)

# KEYS: at, until. ARGV: since, now, limit, after time ('' none), after member.
# Flat (member, revoked_at, keep_until or '') list by (score, member).
_LIST_REVOCATIONS = Script(
    "list_revocations",
    r"""
local since, now, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lo = since
if ARGV[4] ~= '' and tonumber(ARGV[4]) > lo then lo = tonumber(ARGV[4]) end
local out, found, offset = {}, 0, 0
while found < limit do
  local rows = redis.call('ZRANGEBYSCORE', KEYS[1], lo, '+inf', 'WITHSCORES', 'LIMIT', offset, 256)
  for i = 1, #rows, 2 do
    local m, s = rows[i], tonumber(rows[i + 1])
    local skip = ARGV[4] ~= '' and s == tonumber(ARGV[4]) and m <= ARGV[5]
    local keep = redis.call('ZSCORE', KEYS[2], m)
    if not skip and not (keep and tonumber(keep) < now) then
      out[#out + 1] = m
      out[#out + 1] = string.format('%d', s)
      out[#out + 1] = keep and string.format('%d', tonumber(keep)) or ''
      found = found + 1
      if found == limit then break end
    end
  end
  if #rows < 512 then break end
  offset = offset + 256
end
return out
""",
)

# The user's keys, then conv(1). ARGV: sid, record JSON, listing member, expires_at,
# floor ms, state JSON, task count n, then n (task id, stored value, kT member,
# U score: updated_time, or '+inf' in a pinned conversation), then (feedback id,
# task id, stored value, FZ member) to the end.
# 1 written; {0, field, id} on a taken id (nothing written).
_IMPORT = Script(
    "import_conversation",
    _USER
    + r"""
local sid = ARGV[1]
local ks, kt, kT = conv(1)
if redis.call('HEXISTS', C, sid) == 1 then return {0, 'session_id', sid} end
local n = tonumber(ARGV[7])
local first = 8 + 4 * n
for i = 8, first - 1, 4 do
  if redis.call('HEXISTS', TH, ARGV[i]) == 1 then return {0, 'task_id', ARGV[i]} end
end
for i = first, #ARGV, 4 do
  if redis.call('HEXISTS', FH, ARGV[i]) == 1 then return {0, 'feedback_id', ARGV[i]} end
end
redis.call('DEL', kt, kT)
redis.call('HSET', C, sid, ARGV[2])
redis.call('ZADD', S, 0, ARGV[3])
if pinned(cjson.decode(ARGV[2])) then redis.call('ZADD', P, 0, ARGV[3]) end
redis.call('SET', ks, ARGV[6])
for i = 8, first - 1, 4 do
  local tid = ARGV[i]
  redis.call('HSET', kt, tid, ARGV[i + 1])
  redis.call('ZADD', kT, 0, ARGV[i + 2])
  redis.call('HSET', TH, tid, sid)
  redis.call('ZADD', X, 0, sid .. '\0' .. tid)
  redis.call('ZADD', U, ARGV[i + 3], sid .. '\0' .. tid)
end
for i = first, #ARGV, 4 do
  redis.call('HSET', FH, ARGV[i], ARGV[i + 2])
  redis.call('ZADD', FZ, 0, ARGV[i + 3])
  redis.call('HSET', FK, ARGV[i + 1], ARGV[i])
end
set_expiry(sid, ARGV[4], tonumber(ARGV[5]), ks, kt, kT)
return 1
""",
)

# The user's keys, then conv(i) of each sid in ARGV[2..]. ARGV[1]: the row budget.
# {rows deleted, sid of each conversation dropped...}.
_ERASE = Script(
    "erase",
    _USER
    + r"""
local budget = tonumber(ARGV[1])
local deleted, dropped = 0, {}
for i = 2, #ARGV do
  if deleted >= budget then break end
  local sid = ARGV[i]
  local ks, kt, kT = conv(i - 1)
  local n = #sid + 2
  local ms = redis.call('ZRANGEBYLEX', X, '[' .. sid .. '\0', '(' .. sid .. '\1',
    'LIMIT', 0, budget - deleted)
  for _, m in ipairs(ms) do
    local tid = string.sub(m, n)
    if redis.call('HGET', TH, tid) == sid and redis.call('HEXISTS', FK, tid) == 1 then
      deleted = deleted + 1
    end
    drop_task(sid, tid)
    local v = redis.call('HGET', kt, tid)
    if v then redis.call('ZREM', kT, string.sub(v, 1, 16) .. tid) end
    redis.call('HDEL', kt, tid)
    deleted = deleted + 1
  end
  if redis.call('ZLEXCOUNT', X, '[' .. sid .. '\0', '(' .. sid .. '\1') == 0 then
    if redis.call('HEXISTS', C, sid) == 1 then deleted = deleted + 1 end
    drop_conversation(sid, ks, kt, kT)
    dropped[#dropped + 1] = sid
  end
end
if redis.call('HLEN', C) == 0 then
  redis.call('DEL', S, E, TH, X, U, FH, FZ, FK, P)
end
local out = {deleted}
for _, sid in ipairs(dropped) do out[#out + 1] = sid end
return out
""",
)


def _revocation_keys(store: RedisStore) -> list[str]:
    return [f"{store.key_prefix}{{r}}:at", f"{store.key_prefix}{{r}}:until"]


async def revoke(store: RedisStore, revocation: Revocation, now: int) -> None:
    member = f"{revocation.kind}:{revocation.subject}"
    keep = "" if revocation.keep_until is None else str(revocation.keep_until)
    args: list[str | int] = [member, revocation.revoked_at, keep, now]
    await store._eval(_REVOKE, _revocation_keys(store), args)


async def list_revocations(
    store: RedisStore, since: int, now: int, limit: int, after: tuple[int, str, str] | None
) -> list[Revocation]:
    after_time = "" if after is None else str(after[0])
    after_member = "" if after is None else f"{after[1]}:{after[2]}"
    args: list[str | int] = [since, now, limit, after_time, after_member]
    rows = await store._eval(_LIST_REVOCATIONS, _revocation_keys(store), args)
    out = []
    for i in range(0, len(rows), 3):
        kind, _, subject = str(rows[i]).partition(":")
        keep = str(rows[i + 2])
        out.append(Revocation(kind, subject, int(rows[i + 1]), int(keep) if keep else None))
    return out


async def export_sessions(
    store: RedisStore, user_id: str, limit: int, after: str | None
) -> list[StoredSession]:
    from agentsession.stores.redis.store import _session

    keys = store._user(user_id)

    async def ids(client: Redis) -> list[Any]:
        return await client.hkeys(keys.fixed[0])

    page = sorted(str(sid) for sid in await store._run(ids) if after is None or str(sid) > after)
    page = page[:limit]
    if not page:
        return []

    async def read(client: Redis) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        pipe.hmget(keys.fixed[0], page)
        for sid in page:
            pipe.get(keys.conversation(sid)[0])
        return await pipe.execute()

    metas, *states = await store._run(read)
    out = []
    for sid, meta, state in zip(page, metas, states, strict=True):
        if meta is None:
            continue
        version = int(json.loads(meta)["v"])
        out.append(StoredSession(_session(user_id, sid, str(meta)), str(state or "{}"), version))
    return out


async def export_tasks(
    store: RedisStore, user_id: str, session_id: str, limit: int, after: tuple[int, str] | None
) -> list[TaskRecord]:
    from agentsession.stores.redis.store import _task

    keys = store._user(user_id)
    _, tasks_key, listing_key = keys.conversation(session_id)
    low = "-" if after is None else "(" + ascending(after[0]) + after[1]

    async def read(client: Redis) -> tuple[list[str], list[Any]]:
        if not await client.hexists(keys.fixed[0], session_id):
            return [], []
        members = await client.zrangebylex(listing_key, low, "+", start=0, num=limit)
        ids = [str(member)[16:] for member in members]
        values = await client.hmget(tasks_key, ids) if ids else []
        return ids, values

    ids, values = await store._run(read)
    return [
        _task(user_id, session_id, tid, str(value))
        for tid, value in zip(ids, values, strict=True)
        if value is not None
    ]


def _import_args(store: RedisStore, rows: UserRows, item: StoredSession) -> list[str | int]:
    from agentsession.stores.redis.store import EXPIRED_FLOOR_MS, _meta, _text

    record = item.record
    tasks = [task for task in rows.tasks if task.session_id == record.id]
    latest = max((task.updated_time for task in tasks), default=None)
    listing = descending(record.updated_time) + record.id
    meta = _meta(record, item.version, latest)
    args: list[str | int] = [
        record.id,
        meta,
        listing,
        _text(record.expires_at) or "",
        EXPIRED_FLOOR_MS,
        item.state_json,
        len(tasks),
    ]
    for task in tasks:
        body = dump_json(
            [task.updated_time, task.user_message, task.message_bubbles, task.task_metadata]
        )
        created = ascending(task.created_time)
        score = "+inf" if record.pinned else task.updated_time
        args += [task.id, created + body, created + task.id, score]
    for fb in (fb for fb in rows.feedback if fb.session_id == record.id):
        body = dump_json([fb.session_id, fb.task_id, fb.rating, fb.comment, fb.created_time])
        created = descending(fb.created_time)
        args += [fb.id, fb.task_id, created + body, created + fb.id]
    return args


async def import_rows(store: RedisStore, rows: UserRows) -> None:
    """Claim every conversation id, then write each conversation; undo on any failure."""
    from agentsession.stores.redis.scripts import SCRIPTS

    keys = store._user(rows.user_id)
    claimed: list[str] = []
    written: list[str] = []
    try:
        for item in rows.sessions:
            registry = registry_key(store.key_prefix, item.record.id)
            held = await store._eval(SCRIPTS["claim_id"], [registry], [rows.user_id])
            if held is not None:
                raise IdConflict("session_id", item.record.id)
            claimed.append(item.record.id)
        for item in rows.sessions:
            result = await store._eval(
                _IMPORT,
                keys.with_conversations([item.record.id]),
                _import_args(store, rows, item),
            )
            if result != 1:
                raise IdConflict(str(result[1]), str(result[2]))
            written.append(item.record.id)
    except BaseException:
        for sid in written:
            await store._eval(SCRIPTS["delete"], keys.with_conversations([sid]), [sid, 0])
        await store._release_ids([(rows.user_id, sid) for sid in claimed])
        raise


async def erase_batch(store: RedisStore, user_id: str, limit: int) -> int:
    keys = store._user(user_id)

    async def ids(client: Redis) -> list[Any]:
        return await client.hkeys(keys.fixed[0])

    sids = sorted(str(sid) for sid in await store._run(ids))[:ERASE_CONVERSATIONS]
    result = await store._eval(_ERASE, keys.with_conversations(sids), [limit, *sids])
    dropped = [str(sid) for sid in result[1:]]
    await store._release_ids([(user_id, sid) for sid in dropped])
    return int(result[0])
