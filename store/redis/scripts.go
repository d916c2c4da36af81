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
// KEYS: checkpoint, progress hash, legacy progress string, range claims
// hash, then one per mark, one record claim per mark, one per state op,
// one per failure, one record claim per release, and the fence's claim
// last when there is a fence.
//
// ARGV: 1 sequence, 2-5 processed skipped discarded lost, 6 '1' to write
// progress, 7 progress, 8-10 the counts of marks, state ops and failures,
// 11 the fence token or an empty string for none, 12 the progress's
// mapping (its field in the hash), 13 the count of releases, 14 the release
// owner, 15 '1' to end the mapping's range claim (its field in the range
// claims hash), 16 the mark owner (hex) or an empty string for none; then
// per mark its expiry (Unix ns) and PXAT (Unix ms); per state op 's' or 'd'
// and the value; per failure its number of entries, and per entry its
// number of field and value arguments followed by them.
//
// The checks come in this order, all before the first write: the fence;
// the checkpoint not moving backwards; with a mark owner, each mark's
// record claim (store.Write.MarkOwner); the types of the keys written.
// The mark owner's check reads the mark's record claim (one GET) and, only
// when there is none, whether the mark key exists (EXISTS). A claim must
// be the mark owner's, whatever its lease: another owner's claim means it
// took the key over once the lease ran out, and may run the record too.
// With no claim, a mark key still there, expired or not, means the same:
// the other owner's commit marked the key and deleted its claim. A key
// with neither (the claim outlived its grace with nobody taking it over)
// is free to mark. A key marked twice is checked twice, with the same
// outcome: nothing is written between the checks.
//
// The progress of the empty mapping replaces the legacy string key, which is
// deleted. A mark deletes the key's record claim, whoever holds it (the
// check above, when asked for, made sure that is the mark owner); a
// release deletes it only if the release owner holds it.
// Ending the range claim deletes the mapping's field after the progress is
// written.
//
// Reply: {'ok'}, {'backwards', stored sequence}, {'fenced', held token} or
// {'lost', the mark's index (from 1), the claim that holds its key or an
// empty string for a mark} with nothing written.
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
local nm, ns, nf, nr = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[13])
local mk, ck, sk = 4, 4 + nm, 4 + 2 * nm
local fk = sk + ns
local rk = fk + nf
if ARGV[16] ~= '' then
  local mine = ARGV[16] .. ':'
  for i = 1, nm do
    local c = redis.call('GET', KEYS[ck + i])
    if c then
      if string.sub(c, 1, #mine) ~= mine then
        return {'lost', tostring(i), c}
      end
    elseif redis.call('EXISTS', KEYS[mk + i]) == 1 then
      return {'lost', tostring(i), ''}
    end
  end
end
for i = 1, nf do
  local t = redis.call('TYPE', KEYS[fk + i])['ok']
  if t ~= 'none' and t ~= 'stream' then
    return redis.error_reply('WRONGTYPE on-failure key ' .. KEYS[fk + i] .. ' holds a ' .. t .. ', not a stream')
  end
end
if ARGV[6] == '1' then
  local t = redis.call('TYPE', KEYS[2])['ok']
  if t ~= 'none' and t ~= 'hash' then
    return redis.error_reply('WRONGTYPE progress key ' .. KEYS[2] .. ' holds a ' .. t .. ', not a hash')
  end
end
if ARGV[15] == '1' then
  local t = redis.call('TYPE', KEYS[4])['ok']
  if t ~= 'none' and t ~= 'hash' then
    return redis.error_reply('WRONGTYPE range claims key ' .. KEYS[4] .. ' holds a ' .. t .. ', not a hash')
  end
end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'processed', ARGV[2], 'skipped', ARGV[3], 'discarded', ARGV[4], 'lost', ARGV[5])
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[2], ARGV[12], ARGV[7])
  if ARGV[12] == '' then
    redis.call('DEL', KEYS[3])
  end
end
if ARGV[15] == '1' then
  redis.call('HDEL', KEYS[4], ARGV[12])
end
local a = 17
for i = 1, nm do
  redis.call('SET', KEYS[mk + i], ARGV[a], 'PXAT', ARGV[a + 1])
  redis.call('DEL', KEYS[ck + i])
  a = a + 2
end
for i = 1, ns do
  if ARGV[a] == 'd' then
    redis.call('DEL', KEYS[sk + i])
  else
    redis.call('SET', KEYS[sk + i], ARGV[a + 1])
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
local owner = ARGV[14] .. ':'
for i = 1, nr do
  local c = redis.call('GET', KEYS[rk + i])
  if c and string.sub(c, 1, #owner) == owner then
    redis.call('DEL', KEYS[rk + i])
  end
end
return {'ok'}
`)

// A record claim (store.RecordClaims) is a string: the owner in hex, ':',
// and the lease's end in Unix ns; its key expires one grace after the
// lease, as garbage collection only.

// claimRecordsScript claims keys in window order (store.RecordClaims): a
// key with a live mark is completed; a key whose claim another owner holds
// under a running lease stops the walk; any other key is claimed (or
// claimed again) for the owner. Keys after the one that stopped it are not
// touched. Redis runs the script alone, so the walk is atomic.
//
// KEYS: one record claim per key, then one mark per key when marks are
// looked up, then the fence's claim when there is a fence.
//
// ARGV: 1 owner (hex), 2 now (Unix ns), 3 lease until (Unix ns), 4 PXAT of
// the claims (Unix ms), 5 '1' to look marks up, 6 fence token or an empty
// string for none, 7 the number of keys.
//
// Reply: {'ok', statuses}, {'held', statuses, lease of the held key} or
// {'fenced', held token} with nothing claimed. statuses has one digit per
// key walked: 1 acquired, 2 held elsewhere (the last), 3 completed.
var claimRecordsScript = goredis.NewScript(luaCompare + `
if ARGV[6] ~= '' then
  local held = redis.call('HGET', KEYS[#KEYS], 'token')
  if held ~= ARGV[6] then
    return {'fenced', held or 'none'}
  end
end
local n = tonumber(ARGV[7])
local marks = ARGV[5] == '1'
local now = ARGV[2]
local val = ARGV[1] .. ':' .. ARGV[3]
local st = {}
for i = 1, n do
  local done = false
  if marks then
    local m = redis.call('GET', KEYS[n + i])
    done = m and cmpdec(m, now) > 0
  end
  if done then
    st[i] = '3'
  else
    local c = redis.call('GET', KEYS[i])
    if c then
      local owner, lease = string.match(c, '^(%x*):(%d+)$')
      if not owner then
        return redis.error_reply('corrupt record claim ' .. KEYS[i])
      end
      if owner ~= ARGV[1] and cmpdec(lease, now) > 0 then
        st[i] = '2'
        return {'held', table.concat(st), lease}
      end
    end
    redis.call('SET', KEYS[i], val, 'PXAT', ARGV[4])
    st[i] = '1'
  end
end
return {'ok', table.concat(st)}
`)

// A range claim (store.RangeClaim) is a field of the range claims hash of
// a scope, stream and shard: the mapping, and its value the range's first
// and last sequences and the lease's end (Unix ns), ':' between them. The
// hash expires one grace after the latest lease of its fields, as garbage
// collection only; a field ended by a commit is deleted, and the hash with
// its last field.

// claimRangeScript claims a range of a shard for a mapping
// (store.RangeClaim): if another mapping's range is live at now and
// overlaps, it reports the earliest lease end among such ranges and writes
// nothing; otherwise it replaces the mapping's field and returns the
// scope's progress over the shard. Redis runs the script alone, so the
// check, the write and the read are atomic: no commit comes between them.
//
// KEYS: range claims hash, progress hash, legacy progress string, then the
// fence's claim when there is a fence.
//
// ARGV: 1 mapping, 2 from, 3 to, 4 now (Unix ns), 5 lease until (Unix ns),
// 6 the expiry grace (ms), 7 fence token or an empty string for none.
//
// Reply: {'ok', legacy progress (empty when none), '1' when the legacy
// progress counts (there is one and the hash has no field of mapping "")
// else '0', then the hash's mapping and progress pairs}, {'held', lease
// end} or {'fenced', held token}; nothing is claimed but for 'ok'.
var claimRangeScript = goredis.NewScript(luaCompare + `
if ARGV[7] ~= '' then
  local held = redis.call('HGET', KEYS[#KEYS], 'token')
  if held ~= ARGV[7] then
    return {'fenced', held or 'none'}
  end
end
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'hash' then
  return redis.error_reply('WRONGTYPE range claims key ' .. KEYS[1] .. ' holds a ' .. t .. ', not a hash')
end
local from, to, now, lease = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local last = lease
local held
local ranges = redis.call('HGETALL', KEYS[1])
for i = 1, #ranges, 2 do
  local f, l, u = string.match(ranges[i + 1], '^(%d*):(%d*):(%d+)$')
  if not u then
    return redis.error_reply('corrupt range claim ' .. KEYS[1] .. ' field ' .. ranges[i])
  end
  if ranges[i] ~= ARGV[1] then
    if cmpdec(u, now) > 0 and cmpdec(f, to) <= 0 and cmpdec(l, from) >= 0 then
      if not held or cmpdec(u, held) < 0 then
        held = u
      end
    end
    if cmpdec(u, last) > 0 then
      last = u
    end
  end
end
if held then
  return {'held', held}
end
-- The progress is read before the write, which the script's atomicity
-- makes the same as after it, so that a key of the wrong type fails the
-- script before it writes anything.
local out = {'ok', '', '0'}
local progress = redis.call('HGETALL', KEYS[2])
local scopeWide = false
for i = 1, #progress, 2 do
  out[#out + 1] = progress[i]
  out[#out + 1] = progress[i + 1]
  if progress[i] == '' then
    scopeWide = true
  end
end
if not scopeWide then
  local legacy = redis.call('GET', KEYS[3])
  if legacy then
    out[2], out[3] = legacy, '1'
  end
end
redis.call('HSET', KEYS[1], ARGV[1], from .. ':' .. to .. ':' .. lease)
local ms = 1
if #last > 6 then
  ms = tonumber(string.sub(last, 1, -7))
end
redis.call('PEXPIREAT', KEYS[1], string.format('%d', ms + tonumber(ARGV[6])))
return out
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
