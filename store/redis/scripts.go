package redis

import goredis "github.com/redis/go-redis/v9"

// luaCompare compares decimal strings as the numbers they spell, of any
// length (idem.Sequence.Compare): leading zeros stripped, then the length,
// then the digits byte by byte (not with '<', which follows the server's
// collation locale).
const luaCompare = `
local function cmpdec(a, b)
  a = string.gsub(a, '^0+', '')
  b = string.gsub(b, '^0+', '')
  if #a ~= #b then
    if #a < #b then return -1 end
    return 1
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  return 0
end
`

// commitScript applies a store.Write. It reads and checks everything before
// its first write: Redis does not roll a script back, so an error after a
// write would leave part of the Write applied.
//
// KEYS: checkpoint, progress, then one per mark, per state op, per failure.
// ARGV: 1 sequence, 2-5 processed skipped discarded lost, 6 '1' to write
// progress, 7 progress, 8-10 the counts of marks, state ops and failures,
// 11 the fence token; then per mark its expiry (Unix ns) and PXAT (Unix ms); per state op 's'
// or 'd' and the value; per failure its number of entries, and per entry
// its number of field and value arguments followed by them.
//
// ARGV 11 is the fence's token, or an empty string for none; when set, the last key is
// the fence's claim, which must hold that token.
//
// Reply: {'ok'}, {'backwards', stored sequence} or {'fenced', held token}
// with nothing written.
var commitScript = goredis.NewScript(luaCompare + `
if ARGV[11] ~= '' then
  local held = redis.call('HGET', KEYS[#KEYS], 'token')
  if held ~= ARGV[11] then
    return {'fenced', held or 'none'}
  end
end
local cur = redis.call('HGET', KEYS[1], 'seq')
if cur and cmpdec(ARGV[1], cur) < 0 then
  return {'backwards', cur}
end
local nm, ns, nf = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local fk = 2 + nm + ns
for i = 1, nf do
  local t = redis.call('TYPE', KEYS[fk + i])['ok']
  if t ~= 'none' and t ~= 'stream' then
    return redis.error_reply('WRONGTYPE on-failure key ' .. KEYS[fk + i] .. ' holds a ' .. t .. ', not a stream')
  end
end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'processed', ARGV[2], 'skipped', ARGV[3], 'discarded', ARGV[4], 'lost', ARGV[5])
if ARGV[6] == '1' then
  redis.call('SET', KEYS[2], ARGV[7])
end
local a = 12
for i = 1, nm do
  redis.call('SET', KEYS[2 + i], ARGV[a], 'PXAT', ARGV[a + 1])
  a = a + 2
end
for i = 1, ns do
  if ARGV[a] == 'd' then
    redis.call('DEL', KEYS[2 + nm + i])
  else
    redis.call('SET', KEYS[2 + nm + i], ARGV[a + 1])
  end
  a = a + 2
end
for i = 1, nf do
  local entries = tonumber(ARGV[a])
  a = a + 1
  for e = 1, entries do
    local n = tonumber(ARGV[a])
    redis.call('XADD', KEYS[fk + i], '*', unpack(ARGV, a + 1, a + n))
    a = a + 1 + n
  end
end
return {'ok'}
`)

// A claim record is a hash: status ('A' acquired, 'C' completed), token,
// hash (the 32-byte payload hash), lease and expires (Unix ns, 0 for
// none), result.

// claimScript takes a claim, or reports the live record in its way.
//
// KEYS: claim, token counter. ARGV: payload hash, now (Unix ns), lease
// until (Unix ns), PEXPIREAT of the new record (Unix ms).
//
// Reply: {'acquired', token}, {'completed', token, hash, lease, expires,
// result}, {'held', lease}, or {'mismatch'}.
var claimScript = goredis.NewScript(luaCompare + `
local h = redis.call('HMGET', KEYS[1], 'status', 'token', 'hash', 'lease', 'expires', 'result')
if h[1] then
  local live
  if h[1] == 'C' then
    live = h[5] == '0' or cmpdec(ARGV[2], h[5]) < 0
  else
    live = cmpdec(ARGV[2], h[4]) < 0
  end
  if live then
    if h[3] ~= ARGV[1] then
      return {'mismatch'}
    end
    if h[1] == 'C' then
      return {'completed', h[2], h[3], h[4], h[5], h[6] or ''}
    end
    return {'held', h[4]}
  end
end
local token = string.format('%d', redis.call('INCR', KEYS[2]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'A', 'token', token, 'hash', ARGV[1], 'lease', ARGV[3], 'expires', '0')
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return {'acquired', token}
`)

// completeScript completes a claim that still holds the key's token.
//
// KEYS: claim. ARGV: token, result, expires (Unix ns, 0 for never),
// PEXPIREAT (Unix ms, 0 for none).
//
// Reply: {'ok'} or {'fenced'}.
var completeScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return {'fenced'}
end
redis.call('HSET', KEYS[1], 'status', 'C', 'result', ARGV[2], 'expires', ARGV[3])
if ARGV[4] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
end
return {'ok'}
`)

// releaseScript ends the lease of a claim that still holds the key's
// token; a completed record is left as it is. The key keeps its
// PEXPIREAT, and the counter keeps the next token higher.
//
// KEYS: claim. ARGV: token. Reply: {'ok'} or {'fenced'}.
var releaseScript = goredis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'token', 'status')
if h[1] ~= ARGV[1] then
  return {'fenced'}
end
if h[2] ~= 'C' then
  redis.call('HSET', KEYS[1], 'lease', '1')
end
return {'ok'}
`)

// extendScript moves the lease of a claim that still holds the key's
// token; a completed record is left as it is.
//
// KEYS: claim. ARGV: token, lease until (Unix ns), PEXPIREAT (Unix ms).
// Reply: {'ok'} or {'fenced'}.
var extendScript = goredis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'token', 'status')
if h[1] ~= ARGV[1] then
  return {'fenced'}
end
if h[2] ~= 'C' then
  redis.call('HSET', KEYS[1], 'lease', ARGV[2])
  if redis.call('PTTL', KEYS[1]) >= 0 then
    redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  end
end
return {'ok'}
`)
