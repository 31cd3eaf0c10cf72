"""The Lua scripts of `RedisStorage` (the key layout is in `redis_store`): each one
account's atomic step, its keys under the account's hash tag.

Every write script starts with `DELETED_GUARD`: its last KEYS entry is the account's
tombstone (`RedisStorage._write` appends it), so nothing is stored for a deleted account.
"""

from __future__ import annotations

from ..protocol.limits import SNAPSHOT_OVERHEAD

__all__ = [
    "COUNT_REGISTRATION",
    "CREATE_ACCOUNT",
    "DELETED",
    "DELETED_GUARD",
    "DELETE_SNAPSHOTS",
    "GET_CAPSULES",
    "PUBLISH",
    "PUT_CAPSULE",
    "PUT_DEVICE",
    "PUT_GRANT",
    "PUT_MANIFEST",
    "PUT_RECEIPTS",
    "REVOKE",
    "SET_RECEIPT",
    "USAGE",
]

DELETED = "ACCOUNT_DELETED"
DELETED_GUARD = f"""
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return redis.error_reply('{DELETED}') end
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

# KEYS: rev, grants set of the device.  ARGV: device id, revocation, grant key prefix.
# Returns the revocation in force (the first one recorded), then the refs of the shares
# that were deleted.
REVOKE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local deleted = {redis.call('HGET', KEYS[1], ARGV[1])}
for _, ref in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('DEL', ARGV[3] .. ref) == 1 then table.insert(deleted, ref) end
end
redis.call('DEL', KEYS[2])
return deleted
"""

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

# KEYS: capcur (names the account's slot for Redis Cluster; the capsule hashes are derived
# from ARGV[1] under the same hash tag). ARGV: "sc:{A}:cap:" prefix, then label, key epoch
# pairs. Returns the capsules in order (false where missing): one round trip for a
# re-encryption batch of any size.
GET_CAPSULES = """
local out = {}
for i = 2, #ARGV, 2 do
  out[#out + 1] = redis.call('HGET', ARGV[1] .. ARGV[i], ARGV[i + 1])
end
return out
"""

# KEYS: rev, grant key, grants set.  ARGV: device id, share, ttl seconds, ref.
PUT_GRANT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('SADD', KEYS[3], ARGV[4])
return 1
"""

# The account's quota counters, counted from what is stored the first time a script needs
# them (accounts stored before quotas existed). KEYS[1] of the caller is the feed.
# What a snapshot costs its account's byte quota: its sealed bytes, the other nodes'
# receipts kept with it, and SNAPSHOT_OVERHEAD for the rest of what it takes in Redis (its
# hash's other fields, its entries in three sorted sets), so many small snapshots cannot
# hold many times the quota. Counters from before this rule (`v` other than 2) are
# counted again at the account's next publish or purge.
USAGE = f"""
local OVERHEAD = {SNAPSHOT_OVERHEAD}
local function stored_size(key)
  return redis.call('HSTRLEN', key, 'data') + redis.call('HSTRLEN', key, 'cert') + OVERHEAD
end
local function usage_init(usage, feed, snap_prefix)
  if redis.call('HGET', usage, 'v') == '2' then return end
  local bytes, groups, seen = 0, 0, {{}}
  for _, seq in ipairs(redis.call('ZRANGE', feed, 0, -1)) do
    bytes = bytes + stored_size(snap_prefix .. seq)
    local g = redis.call('HGET', snap_prefix .. seq, 'group')
    if g and not seen[g] then
      seen[g] = true
      groups = groups + 1
    end
  end
  redis.call('HSET', usage, 'bytes', bytes, 'groups', groups, 'v', 2)
end
"""

# KEYS: capcur, gk:<g>:<kind>, feed, seq, rev, group:<g>, gk:<g>:<pruned kind> (KEYS[2]
#       again when nothing is pruned), usage.
# ARGV: label, key epoch, mls epoch, digest, data, retain, snap key prefix, author,
#       group id, kind, prune ('1': once stored, delete the group's snapshots of the
#       pruned kind below the MLS epoch of the oldest snapshot of this kind still kept,
#       this one included: a tree's patches below its oldest retained base rebuild no
#       epoch any more),
#       max jump (how far above the stored top an MLS epoch may go), stored at, receipt,
#       quota of groups, quota of stored bytes.
# Returns {status, seq or current epoch (the quota's limit for a quota refusal), the
# stored receipt (duplicates; false if none)}. The quotas are checked with what this
# store deletes (retention, pruned patches) already taken off.
PUBLISH = (
    USAGE
    + """
if redis.call('HEXISTS', KEYS[5], ARGV[8]) == 1 then return {'revoked', 0} end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {'no_capsule', 0} end
if tonumber(cur) ~= tonumber(ARGV[2]) then return {'stale_key_epoch', tonumber(cur)} end
local epoch = tonumber(ARGV[3])
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if top[1] then
  local top_epoch = tonumber(top[2])
  if epoch < top_epoch then return {'stale_epoch', top_epoch} end
  if epoch > top_epoch + tonumber(ARGV[12]) then return {'epoch_too_far', top_epoch} end
  if epoch == top_epoch then
    local held = redis.call('HMGET', ARGV[7] .. top[1], 'digest', 'rc')
    if held[1] == ARGV[4] then
      return {'duplicate', tonumber(top[1]), held[2]}
    end
    return {'conflict', top_epoch}
  end
end
local doomed = {}
local held = redis.call('ZCARD', KEYS[2])
local extra = held + 1 - tonumber(ARGV[6])
if extra > 0 then doomed = redis.call('ZRANGE', KEYS[2], 0, extra - 1) end
local pruned = {}
if ARGV[11] == '1' then
  -- the oldest kept after this store: the first one retention spares, else this one
  -- (it tops the set); the score as Redis wrote it, exact where a Lua number may not be
  local floor = ARGV[3]
  local spared = math.max(extra, 0)
  if spared < held then
    floor = redis.call('ZRANGE', KEYS[2], spared, spared, 'WITHSCORES')[2]
  end
  pruned = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. floor)
end
local freed = 0
for _, old in ipairs(doomed) do freed = freed + stored_size(ARGV[7] .. old) end
for _, old in ipairs(pruned) do freed = freed + stored_size(ARGV[7] .. old) end
local charge = #ARGV[5] + OVERHEAD
usage_init(KEYS[8], KEYS[3], ARGV[7])
local used = redis.call('HMGET', KEYS[8], 'bytes', 'groups')
local new_group = redis.call('EXISTS', KEYS[6]) == 0
if new_group and tonumber(used[2]) >= tonumber(ARGV[15]) then
  return {'quota_groups', tonumber(ARGV[15])}
end
if tonumber(used[1]) - freed + charge > tonumber(ARGV[16]) then
  return {'quota_stored_bytes', tonumber(ARGV[16])}
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', ARGV[7] .. seq, 'data', ARGV[5], 'digest', ARGV[4], 'label', ARGV[1],
  'key_epoch', ARGV[2], 'group', ARGV[9], 'kind', ARGV[10], 'mls_epoch', ARGV[3],
  'at', ARGV[13], 'rc', ARGV[14])
redis.call('ZADD', KEYS[2], epoch, seq)
redis.call('ZADD', KEYS[3], seq, seq)
redis.call('ZADD', KEYS[6], seq, seq)
local function drop(olds, index)
  for _, old in ipairs(olds) do
    redis.call('DEL', ARGV[7] .. old)
    redis.call('ZREM', KEYS[3], old)
    redis.call('ZREM', KEYS[6], old)
    redis.call('ZREM', index, old)
  end
end
drop(doomed, KEYS[2])
drop(pruned, KEYS[7])
if charge ~= freed then redis.call('HINCRBY', KEYS[8], 'bytes', charge - freed) end
if new_group then redis.call('HINCRBY', KEYS[8], 'groups', 1) end
return {'stored', seq}
"""
)


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

# KEYS: gk:<g>:<kind>, usage.  ARGV: MLS epoch, digest, snap key prefix, receipts.
# Stores other nodes' receipts for the snapshot at that epoch if it has that digest and
# they are more than the stored ones (a longer set replaces a shorter one: every set
# comes whole from a publisher, each receipt checked), charging the account's byte
# counter for them. Returns 'stored', 'kept' (as many or more already) or 'not_found'.
PUT_RECEIPTS = """
local seqs = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
if not seqs[1] then return 'not_found' end
local key = ARGV[3] .. seqs[1]
if redis.call('HGET', key, 'digest') ~= ARGV[2] then return 'not_found' end
if #ARGV[4] == 0 then return 'kept' end
local held = redis.call('HGET', key, 'cert')
if held and #held >= #ARGV[4] then return 'kept' end
redis.call('HSET', key, 'cert', ARGV[4])
if redis.call('HGET', KEYS[2], 'v') == '2' then  -- else counted whole when first counted
  redis.call('HINCRBY', KEYS[2], 'bytes', #ARGV[4] - #(held or ''))
end
return 'stored'
"""

# KEYS: snap:<seq>.  ARGV: stored at, receipt.
# Gives a snapshot stored before receipts existed this node's receipt unless it has one;
# returns the receipt in force (false if the snapshot is gone: no stray hash is created).
SET_RECEIPT = """
if redis.call('HEXISTS', KEYS[1], 'digest') == 0 then return false end
redis.call('HSETNX', KEYS[1], 'at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'rc', ARGV[2])
return redis.call('HGET', KEYS[1], 'rc')
"""

# KEYS: feed, usage.  ARGV: snap key prefix, group:<g> key, gk:<g>: key prefix, then
# sequence numbers. Deletes each snapshot still there from the feed, its group and its
# (group, kind) index, and takes it off the quota counters; returns how many.
DELETE_SNAPSHOTS = (
    USAGE
    + """
usage_init(KEYS[2], KEYS[1], ARGV[1])
local deleted, freed = 0, 0
for i = 4, #ARGV do
  local seq = ARGV[i]
  local kind = redis.call('HGET', ARGV[1] .. seq, 'kind')
  if kind then
    freed = freed + stored_size(ARGV[1] .. seq)
    redis.call('DEL', ARGV[1] .. seq)
    redis.call('ZREM', KEYS[1], seq)
    redis.call('ZREM', ARGV[2], seq)
    redis.call('ZREM', ARGV[3] .. kind, seq)
    deleted = deleted + 1
  end
end
if freed > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -freed) end
if deleted > 0 and redis.call('EXISTS', ARGV[2]) == 0 then
  redis.call('HINCRBY', KEYS[2], 'groups', -1)
end
return deleted
"""
)
