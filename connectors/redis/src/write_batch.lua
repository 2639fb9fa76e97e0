-- One sink batch, atomically: check the stored offsets, write the keys
-- (each guarded by the record's offset, so nothing moves backwards), move
-- the stored offsets.
--
-- KEYS[1]  the offsets hash of the topic
-- ARGV     np, then np × (partition, expected stored offset or "", next offset)
--          nd, then nd keys to delete (tombstones)
--          nh, then nh × (key, offset, only if it exists "1"/"0",
--                         nfields, nfields × (field, value)):
--                hashes replaced whole when the record is newer than the
--                hash's own `offset` field
--          nu, then nu × (hash, field, offset, "WORD [rest]", sticky word or ""):
--                one field holding "<offset> WORD [rest]", replaced when newer,
--                except that a held sticky WORD is never replaced by another
--          no, then no × (hash, field, value): fields written once (HSETNX),
--                for what never changes (an order's lines, its history)
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
  local key, offset, only_existing, nf = nextarg(), tonumber(nextarg()), nextarg(), tonumber(nextarg())
  local fields = {}
  for _ = 1, nf * 2 do
    fields[#fields + 1] = nextarg()
  end
  local current = tonumber(redis.call('HGET', key, 'offset'))
  local write = current == nil or current < offset
  if current == nil and only_existing == '1' then
    write = false
  end
  if write then
    redis.call('DEL', key)
    redis.call('HSET', key, 'offset', offset, unpack(fields))
    written = written + 1
  end
end

local nu = tonumber(nextarg())
for _ = 1, nu do
  local key, field, offset, status, sticky = nextarg(), nextarg(), tonumber(nextarg()), nextarg(), nextarg()
  local current = redis.call('HGET', key, field)
  local write = true
  if current then
    local coffset, cword = string.match(current, '^(%d+) (%S+)')
    if tonumber(coffset) >= offset then
      write = false
    elseif sticky ~= '' and cword == sticky and string.match(status, '^%S+') ~= sticky then
      write = false -- e.g. a coupon holder stays a holder
    end
  end
  if write then
    redis.call('HSET', key, field, offset .. ' ' .. status)
    written = written + 1
  end
end

local no = tonumber(nextarg())
for _ = 1, no do
  written = written + redis.call('HSETNX', nextarg(), nextarg(), nextarg())
end

if #moves > 0 then
  redis.call('HSET', offsets, unpack(moves))
end
return {1, written}
