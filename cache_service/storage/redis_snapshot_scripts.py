"""The snapshot scripts of `RedisStorage`: publishing (retention, pruning and quotas in
one step), receipts and purges. Guarded and keyed as `redis_scripts` says: every snap:<seq>
key they touch is declared or asked for (`NEEDS`)."""

from __future__ import annotations

from ..protocol.limits import SNAPSHOT_OVERHEAD
from .redis_scripts import NEEDS

__all__ = ["AHEAD_MAX", "DELETE_SNAPSHOTS", "PUBLISH", "PUT_RECEIPTS", "SET_RECEIPT", "USAGE"]

# The account's quota counters, counted from what is stored the first time a script needs
# them (accounts stored before quotas existed): `usage_needs` first (whether counted; if
# not, every snapshot of the feed is needed), `usage_init` once they are declared.
# What a snapshot costs its account's byte quota: its sealed bytes, the other nodes'
# receipts kept with it, and SNAPSHOT_OVERHEAD for the rest of what it takes in Redis (its
# hash's other fields, its entries in three sorted sets), so many small snapshots cannot
# hold many times the quota. Counters from before this rule (`v` other than 2) are
# counted again at the account's next publish or purge. Needs `NEEDS` before it.
USAGE = f"""
local OVERHEAD = {SNAPSHOT_OVERHEAD}
local function stored_size(key)
  return redis.call('HSTRLEN', key, 'data') + redis.call('HSTRLEN', key, 'cert') + OVERHEAD
end
local function usage_needs(usage, feed, snap_prefix)
  if redis.call('HGET', usage, 'v') == '2' then return true end
  for _, seq in ipairs(redis.call('ZRANGE', feed, 0, -1)) do need(snap_prefix .. seq) end
  return false
end
local function usage_init(counted, usage, feed, snap_prefix)
  if counted then return end
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

# At most this many sequence numbers in a stored answer's forecast (PUBLISH).
AHEAD_MAX = 32

# KEYS: capcur, gk:<g>:<kind>, feed, seq, rev, group:<g>, gk:<g>:<pruned kind> (KEYS[2]
#       again when nothing is pruned), usage, then the snap:<seq> keys it touches: the
#       new one (seq + 1), the top of gk:<g>:<kind> when the MLS epoch is the same, those
#       retention and pruning delete, every one of the feed for an account not yet
#       counted (a 'keys' answer names those missing, and the next reach - 1 sequence
#       numbers past the new one: publishes may store before the next run).
# ARGV: label, key epoch, mls epoch, digest, data, retain, snap key prefix, author,
#       group id, kind, prune ('1': once stored, delete the group's snapshots of the
#       pruned kind below the MLS epoch of the oldest snapshot of this kind still kept,
#       this one included: a tree's patches below its oldest retained base rebuild no
#       epoch any more),
#       max jump (how far above the stored top an MLS epoch may go), stored at, receipt,
#       quota of groups, quota of stored bytes, reach.
# Returns {status, seq or current epoch (the quota's limit for a quota refusal), the
# stored receipt (duplicates; false if none)}; 'stored' has instead the forecast: the
# sequence numbers the next publish of this (group, kind) would delete, were nothing
# stored in between (up to AHEAD_MAX of each kind), for its caller to declare. The
# quotas are checked with what this store deletes (retention, pruned patches) already
# taken off.
PUBLISH = (
    NEEDS
    + USAGE
    + f"local AHEAD_MAX = {AHEAD_MAX}\n"
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
    local key = need(ARGV[7] .. top[1])
    if #missing > 1 then return missing end
    local held = redis.call('HMGET', key, 'digest', 'rc')
    if held[1] == ARGV[4] then
      return {'duplicate', tonumber(top[1]), held[2]}
    end
    return {'conflict', top_epoch}
  end
end
local retain = tonumber(ARGV[6])
-- what retention deletes once `held` become `held + 1` (the first `most` of it), and the
-- MLS epoch below which pruning deletes: that of the oldest kept, the first one retention
-- spares, else the new one's (it tops the set); the score as Redis wrote it, exact where
-- a Lua number may not be
local prunes = ARGV[11] == '1'
local function deletes(held, new_epoch, most)
  local extra, doomed = held + 1 - retain, {}
  if extra > 0 then doomed = redis.call('ZRANGE', KEYS[2], 0, math.min(extra, most) - 1) end
  local floor = new_epoch
  local spared = math.max(extra, 0)
  if prunes and spared < held then
    floor = redis.call('ZRANGE', KEYS[2], spared, spared, 'WITHSCORES')[2]
  end
  return doomed, floor
end
local held = redis.call('ZCARD', KEYS[2])
local doomed, floor = deletes(held, ARGV[3], held + 1)
local pruned = {}
if prunes then
  pruned = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. floor)
end
for _, old in ipairs(doomed) do need(ARGV[7] .. old) end
for _, old in ipairs(pruned) do need(ARGV[7] .. old) end
local seq = tonumber(redis.call('GET', KEYS[4]) or '0') + 1
need(ARGV[7] .. seq)
local counted = usage_needs(KEYS[8], KEYS[3], ARGV[7])
if #missing > 1 then
  for i = 1, tonumber(ARGV[17]) - 1 do need(ARGV[7] .. (seq + i)) end
  return missing
end
local freed = 0
for _, old in ipairs(doomed) do freed = freed + stored_size(ARGV[7] .. old) end
for _, old in ipairs(pruned) do freed = freed + stored_size(ARGV[7] .. old) end
local charge = #ARGV[5] + OVERHEAD
usage_init(counted, KEYS[8], KEYS[3], ARGV[7])
local used = redis.call('HMGET', KEYS[8], 'bytes', 'groups')
local new_group = redis.call('EXISTS', KEYS[6]) == 0
if new_group and tonumber(used[2]) >= tonumber(ARGV[15]) then
  return {'quota_groups', tonumber(ARGV[15])}
end
if tonumber(used[1]) - freed + charge > tonumber(ARGV[16]) then
  return {'quota_stored_bytes', tonumber(ARGV[16])}
end
redis.call('INCR', KEYS[4])
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
-- the forecast: the next publish of this (group, kind), at an MLS epoch above this one
local ahead, next_floor = {seq}, nil  -- retention 1: this one
if retain > 1 then ahead, next_floor = deletes(held + 1 - #doomed, nil, AHEAD_MAX) end
if prunes and next_floor then
  local more = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. next_floor, 'LIMIT', 0,
    AHEAD_MAX)
  for _, old in ipairs(more) do ahead[#ahead + 1] = old end
end
return {'stored', seq, ahead}
"""
)


# KEYS: gk:<g>:<kind>, usage, then snap:<seq> of the snapshot at that MLS epoch (a
#       'keys' answer names it).
# ARGV: MLS epoch, digest, snap key prefix, receipts.
# Stores other nodes' receipts for the snapshot at that epoch if it has that digest and
# they are more than the stored ones (a longer set replaces a shorter one: every set
# comes whole from a publisher, each receipt checked), charging the account's byte
# counter for them. Returns 'stored', 'kept' (as many or more already) or 'not_found'.
PUT_RECEIPTS = (
    NEEDS
    + """
local seqs = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
if not seqs[1] then return 'not_found' end
local key = need(ARGV[3] .. seqs[1])
if #missing > 1 then return missing end
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
)

# KEYS: snap:<seq>.  ARGV: stored at, receipt.
# Gives a snapshot stored before receipts existed this node's receipt unless it has one;
# returns the receipt in force (false if the snapshot is gone: no stray hash is created).
SET_RECEIPT = """
if redis.call('HEXISTS', KEYS[1], 'digest') == 0 then return false end
redis.call('HSETNX', KEYS[1], 'at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'rc', ARGV[2])
return redis.call('HGET', KEYS[1], 'rc')
"""

# KEYS: feed, usage, group:<g>, snap:<seq> of each sequence number, then the
#       gk:<g>:<kind> indexes they are in (their kinds are read from the snapshots: a
#       'keys' answer names them) and, for an account not yet counted, every snapshot of
#       its feed.
# ARGV: snap key prefix, gk:<g>: key prefix, then the sequence numbers.
# Deletes each snapshot still there from the feed, its group and its (group, kind)
# index, and takes it off the quota counters; returns how many.
DELETE_SNAPSHOTS = (
    NEEDS
    + USAGE
    + """
for i = 3, #ARGV do need(ARGV[1] .. ARGV[i]) end
if #missing > 1 then return missing end
for i = 3, #ARGV do
  local kind = redis.call('HGET', ARGV[1] .. ARGV[i], 'kind')
  if kind then need(ARGV[2] .. kind) end
end
local counted = usage_needs(KEYS[2], KEYS[1], ARGV[1])
if #missing > 1 then return missing end
usage_init(counted, KEYS[2], KEYS[1], ARGV[1])
local deleted, freed = 0, 0
for i = 3, #ARGV do
  local seq = ARGV[i]
  local kind = redis.call('HGET', ARGV[1] .. seq, 'kind')
  if kind then
    freed = freed + stored_size(ARGV[1] .. seq)
    redis.call('DEL', ARGV[1] .. seq)
    redis.call('ZREM', KEYS[1], seq)
    redis.call('ZREM', KEYS[3], seq)
    redis.call('ZREM', ARGV[2] .. kind, seq)
    deleted = deleted + 1
  end
end
if freed > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -freed) end
if deleted > 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HINCRBY', KEYS[2], 'groups', -1)
end
return deleted
"""
)
