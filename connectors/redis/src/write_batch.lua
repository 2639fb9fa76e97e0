-- One sink batch, atomically: check the stored offsets, write the keys
-- (compare-and-set by coupon-result offset), move the stored offsets.
--
-- KEYS[1]  the offsets hash of the topic
-- ARGV     np, then np × (partition, expected stored offset or "", next offset)
--          nd, then nd keys to delete (tombstones)
--          nh, then nh × (key, offset, nfields, nfields × (field, value))
--          nu, then nu × (users key, user id, offset, "OUTCOME [sequence]")
-- Returns  {1, keys written} or {0, partition, offset actually stored}.
local offsets = KEYS[1]
local i = 1
local function nextarg()
  local v = ARGV[i]
  i = i + 1
  return v
end

local np = tonumber(nextarg())
local moves = {}
for _ = 1, np do
  local partition, expected, nxt = nextarg(), nextarg(), nextarg()
  local stored = redis.call('HGET', offsets, partition) or ''
  if stored ~= expected then
    -- Flushed, restored from an older snapshot, or written by another
    -- instance: nothing is written, the sink rewinds to what is stored.
    return {0, partition, stored}
  end
  moves[#moves + 1] = partition
  moves[#moves + 1] = nxt
end

local written = 0
local nd = tonumber(nextarg())
for _ = 1, nd do
  written = written + redis.call('DEL', nextarg())
end

local nh = tonumber(nextarg())
for _ = 1, nh do
  local key, offset, nf = nextarg(), tonumber(nextarg()), tonumber(nextarg())
  local fields = {}
  for _ = 1, nf * 2 do
    fields[#fields + 1] = nextarg()
  end
  local current = tonumber(redis.call('HGET', key, 'offset'))
  if current == nil or current < offset then
    redis.call('DEL', key)
    redis.call('HSET', key, 'offset', offset, unpack(fields))
    written = written + 1
  end
end

local nu = tonumber(nextarg())
for _ = 1, nu do
  local key, user, offset, status = nextarg(), nextarg(), tonumber(nextarg()), nextarg()
  local current = redis.call('HGET', key, user)
  local write = true
  if current then
    local coffset, coutcome = string.match(current, '^(%d+) (%S+)')
    if tonumber(coffset) >= offset then
      write = false
    elseif coutcome == 'ISSUED' and string.match(status, '^%S+') ~= 'ISSUED' then
      write = false -- a holder stays a holder
    end
  end
  if write then
    redis.call('HSET', key, user, offset .. ' ' .. status)
    written = written + 1
  end
end

if #moves > 0 then
  redis.call('HSET', offsets, unpack(moves))
end
return {1, written}
