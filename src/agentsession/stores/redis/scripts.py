"""The Lua scripts of the Redis store: one per store call, each atomic in one hash slot.

Every *user script* takes the ten keys of one user (``UserKeys.fixed``) as
``KEYS[1..10]`` and, after them, three keys per conversation it works on (``s``, ``t``,
``T``), all computed in Python: no script builds a key name, so each one runs on the
Redis Cluster node of its user's hash tag. The prelude below gives them names and
the helpers that keep the indexes consistent (a task or a conversation is always
removed with every index entry that names it). Scripts never compare strings for
order (Lua's ``<`` on strings follows the server's locale): ordering is left to
``ZRANGEBYLEX`` and to Python. Numbers are passed and kept as decimal strings, so
times survive any JSON round trip exactly.

Return values: ``false`` becomes None in Python, integers are status codes, and
records come back as the stored strings (Python decodes them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = ["SCRIPTS", "Script"]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` names it by)."""

    name: str
    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())


# Helpers every script may use.
_COMMON = r"""
local function int(n) return string.format('%d', n) end

local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# The user scripts' prelude: the user's keys and the index-keeping helpers.
_USER = (
    _COMMON
    + r"""
local C, S, E, TH, X, U, FH, FZ, FK, P =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]

-- The state, tasks and task listing keys of the i-th conversation of the call.
local function conv(i)
  local b = 8 + 3 * i
  return KEYS[b], KEYS[b + 1], KEYS[b + 2]
end

-- A pinned conversation's tasks score +inf in U (never old); ZSCORE says 'inf'.
local function older(score, cut)
  return score ~= false and score ~= nil and score ~= 'inf' and tonumber(score) < cut
end

local function pinned(m) return m.p == '1' end

-- Pin (or unpin) the conversation whose record is m: its P entry, and its tasks' U
-- scores: +inf while pinned, their updated_time (read from the stored task) after.
local function set_pin(sid, m, on, kt)
  if pinned(m) == on then return end
  local n = #sid + 2
  if on then
    m.p = '1'
    redis.call('ZADD', P, 0, m.k)
  else
    m.p = cjson.null
    redis.call('ZREM', P, m.k)
  end
  local members = redis.call('ZRANGEBYLEX', X, '[' .. sid .. '\0', '(' .. sid .. '\1')
  for _, member in ipairs(members) do
    if on then
      redis.call('ZADD', U, '+inf', member)
    else
      local v = redis.call('HGET', kt, string.sub(member, n))
      local updated = v and string.match(v, '^%[(%-?%d+)', 17)
      if updated then redis.call('ZADD', U, updated, member) end
    end
  end
end

-- Move the conversation's listing entries (S, and P when pinned) to member k.
local function relist(m, k)
  redis.call('ZREM', S, m.k)
  redis.call('ZADD', S, 0, k)
  if pinned(m) then
    redis.call('ZREM', P, m.k)
    redis.call('ZADD', P, 0, k)
  end
  m.k = k
end

-- Latest expiry Redis is given; later ones (and none) keep the keys for ever.
local MAX_EXPIRY = 2 ^ 52

-- The conversation's record if it exists for this user and has not expired at now.
local function live(sid, ks, now)
  local meta = redis.call('HGET', C, sid)
  if not meta or redis.call('EXISTS', ks) == 0 then return nil end
  local e = redis.call('ZSCORE', E, sid)
  if e and tonumber(e) <= now then return nil end
  return meta
end

-- Record expires_at (a decimal string, '' for none) in E and hand it to Redis:
-- the conversation's keys go at that instant. An expiry already past on Redis's own
-- clock (clock skew, or a caller writing history) keeps them floor ms longer: what
-- is visible is decided by the contract's checks at the caller's now, never by a
-- key vanishing in the middle of a write.
local function set_expiry(sid, exp, floor, ks, kt, kT)
  local at = tonumber(exp)
  if at then redis.call('ZADD', E, exp, sid) else redis.call('ZREM', E, sid) end
  if at and at > MAX_EXPIRY then at = nil end
  if at then
    local now = redis_ms()
    if at <= now then at = now + floor end
  end
  for _, key in ipairs({ks, kt, kT}) do
    if at then redis.call('PEXPIREAT', key, int(at)) else redis.call('PERSIST', key) end
  end
end

-- A keyset page: members of zset Z (byte order) from lo to hi, chunk at a time, each
-- given to keep(m), which returns the (id, value) to list or nil to skip it; stops at
-- limit kept. A flat list of id, value, id, value...
local function page(Z, lo, hi, limit, chunk, keep)
  local out, found = {}, 0
  while found < limit do
    local ms = redis.call('ZRANGEBYLEX', Z, lo, hi, 'LIMIT', 0, chunk)
    for _, m in ipairs(ms) do
      local id, value = keep(m)
      if id then
        found = found + 1
        out[#out + 1] = id
        out[#out + 1] = value
        if found == limit then break end
      end
    end
    if #ms < chunk then break end
    lo = '(' .. ms[#ms]
  end
  return out
end

local function meta_expiry(m)
  if m.e == nil or m.e == cjson.null then return '' end
  return m.e
end

-- Remove a feedback record with its listing entry and task link.
local function drop_feedback(fid, tid)
  local v = redis.call('HGET', FH, fid)
  if v then
    redis.call('ZREM', FZ, string.sub(v, 1, 16) .. fid)
    redis.call('HDEL', FH, fid)
  end
  if tid and redis.call('HGET', FK, tid) == fid then redis.call('HDEL', FK, tid) end
end

-- Remove the user-wide index entries of task tid of conversation sid (and its feedback).
local function drop_task(sid, tid)
  local m = sid .. '\0' .. tid
  redis.call('ZREM', X, m)
  redis.call('ZREM', U, m)
  if redis.call('HGET', TH, tid) == sid then
    redis.call('HDEL', TH, tid)
    local fid = redis.call('HGET', FK, tid)
    if fid then drop_feedback(fid, tid) end
  end
end

-- Remove a conversation: its keys, its record, and every index entry of it, its
-- tasks and their feedback (found through X even when Redis expired its keys).
local function drop_conversation(sid, ks, kt, kT)
  local n = #sid + 2
  for _, m in ipairs(redis.call('ZRANGEBYLEX', X, '[' .. sid .. '\0', '(' .. sid .. '\1')) do
    drop_task(sid, string.sub(m, n))
  end
  local meta = redis.call('HGET', C, sid)
  if meta then
    local k = cjson.decode(meta).k
    redis.call('ZREM', S, k)
    redis.call('ZREM', P, k)
  end
  redis.call('HDEL', C, sid)
  redis.call('ZREM', E, sid)
  redis.call('DEL', ks, kt, kT)
end
"""
)

# ARGV: sid, record JSON, listing member, expires_at ('' none), floor ms.
# 1 when added; 0 when the user already has the conversation (a retried call).
_INSERT = r"""
local sid = ARGV[1]
local ks, kt, kT = conv(1)
if redis.call('HEXISTS', C, sid) == 1 then return 0 end
redis.call('DEL', kt, kT)
redis.call('HSET', C, sid, ARGV[2])
redis.call('ZADD', S, 0, ARGV[3])
if pinned(cjson.decode(ARGV[2])) then redis.call('ZADD', P, 0, ARGV[3]) end
redis.call('SET', ks, '{}')
set_expiry(sid, ARGV[4], tonumber(ARGV[5]), ks, kt, kT)
return 1
"""

# ARGV: sid, now. The record JSON, or nil.
_GET = r"""
local ks = conv(1)
return live(ARGV[1], ks, tonumber(ARGV[2])) or false
"""

# ARGV: now, lexical lower bound (exclusive cursor or '-'), limit, pinned ('1' only
# pinned: the P listing; '0' only the others: S without P's members; '' all).
# Flat list of (sid, record JSON), newest first, skipping expired conversations.
_LIST_SESSIONS = r"""
local now, limit, only = tonumber(ARGV[1]), tonumber(ARGV[3]), ARGV[4]
local Z = S
if only == '1' then Z = P end
return page(Z, ARGV[2], '+', limit, limit + 16, function(m)
  if only == '0' and redis.call('ZSCORE', P, m) then return nil end
  local sid = string.sub(m, 17)
  local e = redis.call('ZSCORE', E, sid)
  if e and tonumber(e) <= now then return nil end
  local meta = redis.call('HGET', C, sid)
  if meta then return sid, meta end
  return nil
end)
"""

# ARGV: sid, now, expires_at, rename (1/0), has name (1/0), name, viewed (1/0),
# new listing member (rename), floor ms, pin ('1' pin, '0' unpin, '' as is).
# The updated record JSON, or nil.
_UPDATE = r"""
local sid = ARGV[1]
local ks, kt, kT = conv(1)
local meta = live(sid, ks, tonumber(ARGV[2]))
if not meta then return false end
local m = cjson.decode(meta)
if ARGV[4] == '1' then
  if ARGV[5] == '1' then m.n = ARGV[6] else m.n = cjson.null end
  m.ut = ARGV[2]
  relist(m, ARGV[8])
end
if ARGV[7] == '1' then m.lv = ARGV[2] end
if ARGV[10] ~= '' then set_pin(sid, m, ARGV[10] == '1', kt) end
if ARGV[3] ~= '' then m.e = ARGV[3] else m.e = cjson.null end
meta = cjson.encode(m)
redis.call('HSET', C, sid, meta)
set_expiry(sid, ARGV[3], tonumber(ARGV[9]), ks, kt, kT)
return meta
"""

# ARGV: sid, now. 1 when deleted, 0 when missing.
_DELETE = r"""
local sid = ARGV[1]
local ks, kt, kT = conv(1)
if not live(sid, ks, tonumber(ARGV[2])) then return 0 end
drop_conversation(sid, ks, kt, kT)
return 1
"""

# ARGV: sid, now. {state JSON, version} or nil.
_LOAD_STATE = r"""
local ks = conv(1)
local meta = live(ARGV[1], ks, tonumber(ARGV[2]))
if not meta then return false end
return {redis.call('GET', ks), cjson.decode(meta).v}
"""

# ARGV: sid, now, expires_at, state JSON, expected version, new listing member,
# floor ms. 1 written, 0 the version moved on, nil missing.
_WRITE_STATE = r"""
local sid = ARGV[1]
local ks, kt, kT = conv(1)
local meta = live(sid, ks, tonumber(ARGV[2]))
if not meta then return false end
local m = cjson.decode(meta)
if m.v ~= ARGV[5] then return 0 end
redis.call('SET', ks, ARGV[4])
m.v = int(tonumber(m.v) + 1)
m.ut = ARGV[2]
relist(m, ARGV[6])
if ARGV[3] ~= '' then m.e = ARGV[3] else m.e = cjson.null end
redis.call('HSET', C, sid, cjson.encode(m))
set_expiry(sid, ARGV[3], tonumber(ARGV[7]), ks, kt, kT)
return 1
"""

# ARGV: sid, task id, now (= updated_time), created prefix (16 hex), task body JSON,
# touch (1/0), expires_at, viewed (1/0), floor ms.
# The stored task (prefix .. body), 0 when the conversation is missing, -1 when the
# user's task id is in another conversation.
_SAVE_TASK = r"""
local sid, tid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ks, kt, kT = conv(1)
local meta = live(sid, ks, now)
if not meta then return 0 end
local home = redis.call('HGET', TH, tid)
if home and home ~= sid then return -1 end
local old = redis.call('HGET', kt, tid)
local value
if old then
  value = string.sub(old, 1, 16) .. ARGV[5]
else
  value = ARGV[4] .. ARGV[5]
  redis.call('ZADD', kT, 0, ARGV[4] .. tid)
end
local m = cjson.decode(meta)
redis.call('HSET', kt, tid, value)
redis.call('HSET', TH, tid, sid)
redis.call('ZADD', X, 0, sid .. '\0' .. tid)
redis.call('ZADD', U, pinned(m) and '+inf' or ARGV[3], sid .. '\0' .. tid)
if m.ta == nil or m.ta == cjson.null or tonumber(m.ta) < now then m.ta = ARGV[3] end
if ARGV[6] == '1' then
  if ARGV[7] ~= '' then m.e = ARGV[7] else m.e = cjson.null end
  if ARGV[8] == '1' then m.lv = ARGV[3] end
end
redis.call('HSET', C, sid, cjson.encode(m))
set_expiry(sid, meta_expiry(m), tonumber(ARGV[9]), ks, kt, kT)
return value
"""

# ARGV: sid, now, lexical start (the lower bound; the upper one when reversed), limit,
# 'rev' for newest first. Flat (task id, stored task) list, or nil.
_LIST_TASKS = r"""
local ks, kt, kT = conv(1)
if not live(ARGV[1], ks, tonumber(ARGV[2])) then return false end
local ms
if ARGV[5] == 'rev' then
  ms = redis.call('ZREVRANGEBYLEX', kT, ARGV[3], '-', 'LIMIT', 0, tonumber(ARGV[4]))
else
  ms = redis.call('ZRANGEBYLEX', kT, ARGV[3], '+', 'LIMIT', 0, tonumber(ARGV[4]))
end
local out = {}
if #ms == 0 then return out end
local ids = {}
for i, m in ipairs(ms) do ids[i] = string.sub(m, 17) end
local values = redis.call('HMGET', kt, unpack(ids))
for i, id in ipairs(ids) do
  if values[i] then
    out[#out + 1] = id
    out[#out + 1] = values[i]
  end
end
return out
"""

# ARGV: sid, task id, feedback id, created prefix (16 hex, newest first), record JSON,
# now. 1 saved, 0 not (no such task of this live conversation, or the id is taken).
_SAVE_FEEDBACK = r"""
local sid, tid, fid = ARGV[1], ARGV[2], ARGV[3]
local ks, kt, kT = conv(1)
if not live(sid, ks, tonumber(ARGV[6])) then return 0 end
if redis.call('HEXISTS', kt, tid) == 0 or redis.call('HGET', TH, tid) ~= sid then return 0 end
local previous = redis.call('HGET', FK, tid)
if previous ~= fid and redis.call('HEXISTS', FH, fid) == 1 then return 0 end
if previous then drop_feedback(previous, tid) end
redis.call('HSET', FH, fid, ARGV[4] .. ARGV[5])
redis.call('ZADD', FZ, 0, ARGV[4] .. fid)
redis.call('HSET', FK, tid, fid)
return 1
"""

# ARGV: lower bound, upper bound, limit, task id, session id, rating ('' = any).
# Flat (feedback id, stored record) list, newest first. With a task id: that task's
# one record, unfiltered (Python applies the rest). Without: a scan of the user's
# feedback from the lower bound on, filtered here.
_LIST_FEEDBACK = r"""
local lo, hi, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local task, session, rating = ARGV[4], ARGV[5], ARGV[6]
local out = {}
if task ~= '' then
  local fid = redis.call('HGET', FK, task)
  if fid then
    local v = redis.call('HGET', FH, fid)
    if v then out = {fid, v} end
  end
  return out
end
return page(FZ, lo, hi, limit, math.max(limit + 16, 128), function(m)
  local fid = string.sub(m, 17)
  local v = redis.call('HGET', FH, fid)
  if not v then return nil end
  if session ~= '' or rating ~= '' then
    local r = cjson.decode(string.sub(v, 17))
    if (session ~= '' and r[1] ~= session) or (rating ~= '' and r[3] ~= rating) then
      return nil
    end
  end
  return fid, v
end)
"""

# ARGV: now, task budget, byte budget, lexical start in the first conversation's task
# listing ('-' or an exclusive bound), then the conversation ids (their keys follow
# the user's). The stored tasks of the live ones, in listing order, until a budget is
# spent: {resume at (conversation number, 0 when done), its lexical start, then
# (conversation number, task id, stored task) triples}.
_SEARCH_TASKS = r"""
local now, budget, bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lo, found, size = ARGV[4], 0, 0
local out = {0, ''}
for i = 5, #ARGV do
  local ks, kt, kT = conv(i - 4)
  if live(ARGV[i], ks, now) then
    while true do
      if found >= budget or size >= bytes then
        out[1], out[2] = i - 4, lo
        return out
      end
      local want = math.min(budget - found, 64)
      local ms = redis.call('ZRANGEBYLEX', kT, lo, '+', 'LIMIT', 0, want)
      if #ms == 0 then break end
      local ids = {}
      for j, m in ipairs(ms) do ids[j] = string.sub(m, 17) end
      local values = redis.call('HMGET', kt, unpack(ids))
      for j, id in ipairs(ids) do
        if values[j] then
          out[#out + 1] = i - 4
          out[#out + 1] = id
          out[#out + 1] = values[j]
          found = found + 1
          size = size + #values[j]
        end
      end
      lo = '(' .. ms[#ms]
      if #ms < want then break end
    end
  end
  lo = '-'
end
return out
"""

# Retention. ARGV: cut, then (task member, conversation index) pairs; the tasks
# still not updated since cut are deleted with their feedback (a pinned
# conversation's tasks score +inf: never). How many.
_PRUNE_TASKS = r"""
local cut, n = tonumber(ARGV[1]), 0
for i = 2, #ARGV, 2 do
  local m = ARGV[i]
  local score = redis.call('ZSCORE', U, m)
  if older(score, cut) then
    local sep = string.find(m, '\0', 1, true)
    local sid, tid = string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
    local ks, kt, kT = conv(tonumber(ARGV[i + 1]))
    local v = redis.call('HGET', kt, tid)
    if v then
      redis.call('ZREM', kT, string.sub(v, 1, 16) .. tid)
      redis.call('HDEL', kt, tid)
    end
    drop_task(sid, tid)
    n = n + 1
  end
end
return n
"""

# ARGV: feedback listing members (each encodes its old created_time). How many deleted.
_PRUNE_FEEDBACK = r"""
local n = 0
for i = 1, #ARGV do
  local m = ARGV[i]
  if redis.call('ZSCORE', FZ, m) then
    local fid = string.sub(m, 17)
    local v = redis.call('HGET', FH, fid)
    local tid = nil
    if v then tid = cjson.decode(string.sub(v, 17))[2] end
    drop_feedback(fid, tid)
    redis.call('ZREM', FZ, m)
    n = n + 1
  end
end
return n
"""

# ARGV: rule ('expired' or 'idle'), now, idle cutoff, activity cutoff, then the
# candidate conversation ids (their keys follow the user's, in order). The
# conversations the rule still finds old (a pinned one is never idle) are deleted;
# their ids are returned.
_PRUNE_SESSIONS = r"""
local rule, now = ARGV[1], tonumber(ARGV[2])
local idle, active = tonumber(ARGV[3]), tonumber(ARGV[4])
local gone = {}
for i = 5, #ARGV do
  local sid = ARGV[i]
  local ks, kt, kT = conv(i - 4)
  local e = redis.call('ZSCORE', E, sid)
  local expired = e ~= false and tonumber(e) <= now
  local doomed = false
  if rule == 'expired' then
    doomed = expired
  elseif not expired then
    local meta = redis.call('HGET', C, sid)
    if meta then
      local m = cjson.decode(meta)
      doomed = not pinned(m)
        and tonumber(m.ut) < idle
        and (m.lv == nil or m.lv == cjson.null or tonumber(m.lv) < idle)
        and (m.ta == nil or m.ta == cjson.null or tonumber(m.ta) < active)
    end
  end
  if doomed then
    drop_conversation(sid, ks, kt, kT)
    gone[#gone + 1] = sid
  end
end
return gone
"""

# Dry run. ARGV: rule, now, task cutoff ('' none), bound (feedback: oldest member
# bound; idle: listing bound), idle cutoff, activity cutoff. How many rows the rule
# would delete for this user.
_COUNT = r"""
local rule, now, tasks_cut = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if rule == 'chat_tasks' then
  return redis.call('ZCOUNT', U, '-inf', '(' .. ARGV[3])
elseif rule == 'expired_sessions' then
  return redis.call('ZCOUNT', E, '-inf', ARGV[2])
elseif rule == 'feedback' then
  local n = 0
  for _, m in ipairs(redis.call('ZRANGEBYLEX', FZ, ARGV[4], '+')) do
    if tasks_cut then
      local v = redis.call('HGET', FH, string.sub(m, 17))
      if v then
        local r = cjson.decode(string.sub(v, 17))
        local score = redis.call('ZSCORE', U, r[1] .. '\0' .. r[2])
        if score and not older(score, tasks_cut) then n = n + 1 end
      end
    else
      n = n + 1
    end
  end
  return n
end
local idle, active, n = tonumber(ARGV[5]), tonumber(ARGV[6]), 0
for _, k in ipairs(redis.call('ZRANGEBYLEX', S, ARGV[4], '+')) do
  local sid = string.sub(k, 17)
  local e = redis.call('ZSCORE', E, sid)
  if not e or tonumber(e) > now then
    local meta = redis.call('HGET', C, sid)
    if meta then
      local m = cjson.decode(meta)
      if not pinned(m)
        and tonumber(m.ut) < idle
        and (m.lv == nil or m.lv == cjson.null or tonumber(m.lv) < idle)
        and (m.ta == nil or m.ta == cjson.null or tonumber(m.ta) < active) then
        n = n + 1
      end
    end
  end
end
return n
"""

# Conversation ids: KEYS[1] is the id's registry key ("<claimed at>:<owner>").
# ARGV: owner. Claims a free id (nil), or returns who holds it.
_CLAIM_ID = (
    _COMMON
    + r"""
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], int(redis_ms()) .. ':' .. ARGV[1])
return false
"""
)

# ARGV: the value seen, new owner, orphan age (ms). Takes over a claim whose owner
# never wrote its conversation, if it is still that claim and old enough: 1, else 0.
_RECLAIM_ID = (
    _COMMON
    + r"""
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] then return 0 end
local claimed = tonumber(string.match(v, '^(%-?%d+):'))
local now = redis_ms()
if claimed and now - claimed < tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], int(now) .. ':' .. ARGV[2])
return 1
"""
)

# ARGV: owner. Frees the id if that user holds it.
_RELEASE_ID = r"""
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^%-?%d+:(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# Leases: KEYS[1] is a hash {owner, expires_at}, kept after it expires (lease_holder).
# ARGV: owner, expires_at, now. 1 taken (free, expired at now, or already ours), else 0.
_TAKE_LEASE = r"""
local h = redis.call('HMGET', KEYS[1], 'owner', 'expires_at')
if h[1] and h[1] ~= ARGV[1] and tonumber(h[2]) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires_at', ARGV[2])
return 1
"""

# ARGV: owner, now. The lease expires at now if owner holds it.
_RELEASE_LEASE = r"""
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[2])
end
return 0
"""


def _user(name: str, body: str) -> Script:
    return Script(name, _USER + body)


#: Every script, by name.
SCRIPTS: dict[str, Script] = {
    script.name: script
    for script in (
        _user("insert", _INSERT),
        _user("get", _GET),
        _user("list_sessions", _LIST_SESSIONS),
        _user("update", _UPDATE),
        _user("delete", _DELETE),
        _user("load_state", _LOAD_STATE),
        _user("write_state", _WRITE_STATE),
        _user("save_task", _SAVE_TASK),
        _user("list_tasks", _LIST_TASKS),
        _user("save_feedback", _SAVE_FEEDBACK),
        _user("list_feedback", _LIST_FEEDBACK),
        _user("search_tasks", _SEARCH_TASKS),
        _user("prune_tasks", _PRUNE_TASKS),
        _user("prune_feedback", _PRUNE_FEEDBACK),
        _user("prune_sessions", _PRUNE_SESSIONS),
        _user("count", _COUNT),
        Script("claim_id", _CLAIM_ID),
        Script("reclaim_id", _RECLAIM_ID),
        Script("release_id", _RELEASE_ID),
        Script("take_lease", _TAKE_LEASE),
        Script("release_lease", _RELEASE_LEASE),
    )
}
