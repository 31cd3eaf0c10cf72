"""The Lua scripts of `RedisStorage` (the key layout is in `redis_store`): each one
account's atomic step, its keys under the account's hash tag.

Every write script starts with `DELETED_GUARD`: its last KEYS entry is the account's
tombstone (`RedisStorage._write` appends it), so nothing is stored for a deleted account.
The snapshot scripts are in `redis_snapshot_scripts`.

Every key a script touches is in its KEYS: Redis Cluster serves a script only the keys it
declares. A key named by stored data (a snapshot's sequence number, a grant's ref) goes
through `need()` (`NEEDS`) before the script reads it: one its caller did not declare
makes the script answer {'keys', key...} before it writes anything, from what it read in
declared keys only, and `_write` runs it again with them (declared after the fixed KEYS,
before the tombstone). A caller that can tell in advance declares them at once.
"""

from __future__ import annotations

__all__ = [
    "ASK_KEYS",
    "COUNT_REGISTRATION",
    "CREATE_ACCOUNT",
    "DELETED",
    "DELETED_GUARD",
    "GET_CAPSULES",
    "NEEDS",
    "PUT_CAPSULE",
    "PUT_DEVICE",
    "PUT_GRANT",
    "PUT_MANIFEST",
    "REVOKE",
    "SEQ_WINDOW",
]

DELETED = "ACCOUNT_DELETED"
DELETED_GUARD = f"""
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return redis.error_reply('{DELETED}') end
"""

# The first element of an answer asking to be run again with more KEYS.
ASK_KEYS = "keys"
# Sequence numbers past the account's last one a publish declares at the least: its own
# and one spare, for a publish of another process or node in between (`redis_forecast`
# adds one for each other one it expects).
SEQ_WINDOW = 2

# need(key): the key, recorded in `missing` unless declared. A script returns `missing`
# when it holds more than its first element, before reading any key recorded there. A
# few KEYS are searched (the derived ones are last), many put in a set first.
NEEDS = f"""
local missing, asked, declared = {{'{ASK_KEYS}'}}, {{}}, nil
local function need(key)
  if #KEYS > 32 then
    if not declared then
      declared = {{}}
      for _, k in ipairs(KEYS) do declared[k] = true end
    end
    if declared[key] then return key end
  else
    for i = #KEYS, 1, -1 do
      if KEYS[i] == key then return key end
    end
  end
  if not asked[key] then
    asked[key] = true
    missing[#missing + 1] = key
  end
  return key
end
"""

# KEYS: account, dev.  ARGV: record, device id, certificate.
# 1 created, 0 identical retry (same record and first certificate), -1 anything else.
CREATE_ACCOUNT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  if existing == ARGV[1] and redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then
    return 0
  end
  return -1
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: the address's counter.  ARGV: window seconds. A fixed window opened by the first
# attempt; returns {count, seconds until it closes}.
COUNT_REGISTRATION = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

# KEYS: dev, rev.  ARGV: device id, certificate, max devices.
PUT_DEVICE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing == ARGV[2] then return 0 end
if not existing and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: rev, grants set of the device, then the grant keys its refs name.
# ARGV: device id, revocation, grant key prefix.
# Returns 'revoked', the revocation in force (the first one recorded), then the refs of
# the shares that were deleted.
REVOKE = (
    NEEDS
    + """
local refs = redis.call('SMEMBERS', KEYS[2])
for _, ref in ipairs(refs) do need(ARGV[3] .. ref) end
if #missing > 1 then return missing end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local deleted = {'revoked', redis.call('HGET', KEYS[1], ARGV[1])}
for _, ref in ipairs(refs) do
  if redis.call('DEL', ARGV[3] .. ref) == 1 then table.insert(deleted, ref) end
end
redis.call('DEL', KEYS[2])
return deleted
"""
)

# KEYS: capcur, cap:<label>.  ARGV: label, key epoch, capsule, max labels.
# Returns {status, current}: 1 stored, 0 identical retry, -1 stale/gap, -2 conflict, -3 full.
PUT_CAPSULE = """
local epoch = tonumber(ARGV[2])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  if epoch ~= 0 then return {-1, -1} end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {-3, -1} end
else
  cur = tonumber(cur)
  if epoch <= cur then
    if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then return {0, cur} end
    if epoch == cur then return {-2, cur} end
    return {-1, cur}
  end
  if epoch ~= cur + 1 then return {-1, cur} end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, epoch}
"""

# KEYS: cap:<label> of each capsule asked for.  ARGV: its key epoch, one per KEYS entry.
# Returns the capsules in order (false where missing): one round trip for a re-encryption
# batch of any size.
GET_CAPSULES = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[i]) end
return out
"""

# KEYS: rev, grant key, grants set.  ARGV: device id, share, ttl seconds, ref.
PUT_GRANT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('SADD', KEYS[3], ARGV[4])
return 1
"""

# KEYS: manifest.  ARGV: data, version, digest, previous digest.
# Returns {status, version stored after}: 'stored', 'duplicate' or 'conflict'.
PUT_MANIFEST = """
local cur = redis.call('HMGET', KEYS[1], 'version', 'digest')
if cur[1] then
  local version = tonumber(cur[1])
  local new = tonumber(ARGV[2])
  if new == version and cur[2] == ARGV[3] then return {'duplicate', version} end
  if new ~= version + 1 or cur[2] ~= ARGV[4] then return {'conflict', version} end
end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'version', ARGV[2], 'digest', ARGV[3])
return {'stored', tonumber(ARGV[2])}
"""
