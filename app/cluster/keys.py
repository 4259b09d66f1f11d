"""The Redis layout of a cluster (SPEC §16): key names, bounds and the Lua scripts.

``ClusterNode`` (``node.py``) and ``ClusterDirectory`` (``directory.py``) read and write these keys;
``docs/cluster.md`` ("How it works") lists them for operators.
"""

from __future__ import annotations

from typing import Any

import orjson

#: bound of one run's event stream (approximate trimming)
STREAM_MAXLEN = 100_000
#: how long the per-owner run index lives after the owner's last run started
OWNER_INDEX_SECONDS = 7 * 86400
#: the most runs one owner's index keeps (the newest); each admission also drops up to
#: ``OWNER_INDEX_PRUNE`` of its oldest members whose record expired, so an owner who never lists stays small
OWNER_INDEX_MAX = 1000
OWNER_INDEX_PRUNE = 10
#: Redis connections of one instance at most
MAX_CONNECTIONS = 4096
#: a run record's ``status`` once the run has ended (``lastSeq`` is then its terminal event's seq)
ENDED_STATUSES = frozenset({"completed", "error", "cancelled"})
#: the set of every instance that joined (members are dropped by the reaper once dead and empty)
INSTANCES = "agw:instances"

RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# renew our lease, or take it back when Redis lost it (restart without persistence)
RENEW = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] or not v then return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 else return 0 end
"""
# take a chat lease that is free or held by a dead instance (ARGV[1] = its token prefix)
TAKE_OVER = """
local v = redis.call('get', KEYS[1])
if (not v) or string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
# admission of a new run: the caps over every instance's live counts, then the run's registration.
# ARGV: me, owner, my total, my owner count (both with the new run), global cap, user cap, counts TTL ms,
#       run id, chat id, startedAt, owner-index TTL s, owner-index size, then the record's field/value pairs
ADMIT = f"local PRUNE = {OWNER_INDEX_PRUNE}\n" + """
local total, mine = tonumber(ARGV[3]), tonumber(ARGV[4])
local ufield = 'u:' .. ARGV[2]
for _, inst in ipairs(redis.call('smembers', 'agw:instances')) do
  if inst ~= ARGV[1] then
    local v = redis.call('hmget', 'agw:inst:' .. inst .. ':live', '*', ufield)
    total = total + (tonumber(v[1]) or 0)
    mine = mine + (tonumber(v[2]) or 0)
  end
end
if mine > tonumber(ARGV[6]) then return {1, mine} end
if total > tonumber(ARGV[5]) then return {2, total} end
local live = 'agw:inst:' .. ARGV[1] .. ':live'
redis.call('hset', live, '*', ARGV[3], ufield, ARGV[4])
redis.call('pexpire', live, ARGV[7])
redis.call('hset', 'agw:run:' .. ARGV[8], unpack(ARGV, 13))
redis.call('sadd', 'agw:inst:' .. ARGV[1] .. ':runs', ARGV[8])
redis.call('set', 'agw:chat:' .. ARGV[9] .. ':active', ARGV[8], 'EX', ARGV[11])
local index = 'agw:owner:' .. ARGV[2] .. ':runs'
for _, old in ipairs(redis.call('zrange', index, 0, PRUNE - 1)) do
  if redis.call('exists', 'agw:run:' .. old) == 0 then redis.call('zrem', index, old) end
end
redis.call('zadd', index, ARGV[10], ARGV[8])
redis.call('zremrangebyrank', index, 0, -1 - tonumber(ARGV[12]))
redis.call('expire', index, ARGV[11])
return {0, 0}
"""

# a live run of this instance registered again after Redis lost its data (a restart without persistence):
# only when its record is gone (a record that is there — ended by the reaper, say — is left alone).
# KEYS: the run's record, this instance's runs, the owner index, the chat's active key, the run's Stream
# ARGV: run id, startedAt, TTL s, the number of record fields n, n field/value pairs, then per Stream entry its
#       id and data (the events the instance still holds, which Redis lost)
REREGISTER = f"""
if redis.call('exists', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[4])
redis.call('hset', KEYS[1], unpack(ARGV, 5, 4 + 2 * n))
redis.call('sadd', KEYS[2], ARGV[1])
redis.call('zadd', KEYS[3], ARGV[2], ARGV[1])
redis.call('expire', KEYS[3], ARGV[3])
redis.call('set', KEYS[4], ARGV[1], 'NX', 'EX', ARGV[3])
redis.call('del', KEYS[5])
for i = 5 + 2 * n, #ARGV, 2 do
  redis.call('xadd', KEYS[5], 'MAXLEN', '~', '{STREAM_MAXLEN}', ARGV[i], 'd', ARGV[i + 1])
end
return 1
"""

#: ``admit_run`` refusals
REFUSED_USER = 1
REFUSED_GLOBAL = 2


def run_key(run_id: str) -> str:
    return f"agw:run:{run_id}"


def events_key(run_id: str) -> str:
    return f"agw:run:{run_id}:events"


def chat_lease_key(chat_id: str) -> str:
    return f"agw:chat:{chat_id}:lease"


def active_key(chat_id: str) -> str:
    return f"agw:chat:{chat_id}:active"


def encode_fields(fields: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in fields.items() if v is not None}


def safe_url(url: str) -> str:
    """The Redis URL without a password (for logs)."""
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
