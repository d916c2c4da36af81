package redisstream

import (
	"fmt"

	goredis "github.com/redis/go-redis/v9"
)

// readScript reads a stream in one atomic step, so that the entries it
// returns and the counters the loss check reasons with describe the same
// instant, and so that only the entries' IDs, data and partition keys cross
// the network (XINFO STREAM and XREVRANGE would send whole entries).
//
// KEYS[1] is the stream. ARGV: the first ID to return (inclusive), the
// most entries to return (0 reads the metadata only), and maxBytes: the
// script stops before an entry's data would take the total past it, but
// always returns one entry when there is one. It fetches in chunks sized
// from the entries seen so far, so that a read of large entries does not
// copy many more of them than it returns.
//
// Reply: {"none"} for a missing key; {"type", type} for a key of another
// type; {"old"} for a server without Redis 7's stream counters; otherwise
// {"stream", length, entries-added, max-deleted-entry-id, first entry ID,
// last entry ID, last-generated-id, then ID, data, pk per entry}, with ""
// for a missing first or last entry and a missing field.
var readScript = goredis.NewScript(`#!lua flags=no-writes
local key = KEYS[1]
local t = redis.call('TYPE', key)['ok']
if t == 'none' then return {'none'} end
if t ~= 'stream' then return {'type', t} end
local info = redis.call('XINFO', 'STREAM', key)
local h = {}
for i = 1, #info, 2 do h[info[i]] = info[i + 1] end
if h['max-deleted-entry-id'] == nil or h['entries-added'] == nil then return {'old'} end
local first, last = '', ''
if h['first-entry'] then first = h['first-entry'][1] end
if h['last-entry'] then last = h['last-entry'][1] end
local out = {'stream', h['length'], h['entries-added'], h['max-deleted-entry-id'], first, last, h['last-generated-id']}

local start, limit, maxBytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n, size, chunk = 0, 0, math.min(limit, 16)
while n < limit do
  local want = math.min(limit - n, chunk)
  local es = redis.call('XRANGE', key, start, '+', 'COUNT', want)
  local stop = #es < want
  for _, e in ipairs(es) do
    local f, data, pk = e[2], nil, nil
    for j = 1, #f, 2 do
      if f[j] == 'data' then
        if data == nil then data = f[j + 1] end
      elseif f[j] == 'pk' then
        if pk == nil then pk = f[j + 1] end
      end
    end
    data = data or ''
    if n > 0 and size + #data > maxBytes then
      stop = true
      break
    end
    n, size = n + 1, size + #data
    out[#out + 1] = e[1]
    out[#out + 1] = data
    out[#out + 1] = pk or ''
    if e[1] == '18446744073709551615-18446744073709551615' then
      stop = true
      break
    end
    start = '(' .. e[1]
  end
  if stop then break end
  local room = maxBytes - size
  chunk = 512
  if size > 0 then
    chunk = math.max(1, math.min(512, math.floor(room * n / size) + 1))
  end
end
return out
`)

// streamInfo is what readScript reports about a stream.
type streamInfo struct {
	exists     bool
	length     uint64
	added      uint64  // entries-added: every entry ever added
	maxDeleted entryID // max-deleted-entry-id: the highest ID removed by XDEL
	first      entryID // the first retained entry; zero when empty
	last       entryID // the last retained entry; zero when empty
	lastGen    entryID // last-generated-id: the highest ID ever added
}

// removed is how many entries trimming or XDEL removed.
func (in *streamInfo) removed() uint64 {
	if in.added < in.length {
		return 0
	}
	return in.added - in.length
}

// xdelFrom reports whether XDEL may have removed an entry at or above id.
func (in *streamInfo) xdelFrom(id entryID) bool {
	return !in.maxDeleted.isZero() && in.maxDeleted.cmp(id) >= 0
}

// entry is one stream entry as readScript returns it.
type entry struct {
	id       entryID
	data, pk string
}

// parseReply decodes readScript's reply.
func parseReply(key string, v any) (streamInfo, []entry, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return streamInfo{}, nil, fmt.Errorf("unexpected script reply %T", v)
	}
	switch kind, _ := arr[0].(string); kind {
	case "none":
		return streamInfo{}, nil, nil
	case "type":
		t := ""
		if len(arr) > 1 {
			t, _ = arr[1].(string)
		}
		return streamInfo{}, nil, fmt.Errorf("key %q holds a %s, not a stream", key, t)
	case "old":
		return streamInfo{}, nil, fmt.Errorf("%w: XINFO STREAM reports no max-deleted-entry-id or entries-added", errOldServer)
	case "stream":
	default:
		return streamInfo{}, nil, fmt.Errorf("unexpected script reply %q", kind)
	}
	const head = 7
	if len(arr) < head || (len(arr)-head)%3 != 0 {
		return streamInfo{}, nil, fmt.Errorf("unexpected script reply of %d items", len(arr))
	}
	in := streamInfo{exists: true}
	var err error
	num := func(v any) uint64 {
		n, ok := v.(int64)
		if !ok || n < 0 {
			err = fmt.Errorf("unexpected counter %v in script reply", v)
		}
		return uint64(n)
	}
	id := func(v any, optional bool) entryID {
		s, ok := v.(string)
		if !ok {
			err = fmt.Errorf("unexpected ID %v in script reply", v)
			return entryID{}
		}
		if s == "" && optional {
			return entryID{}
		}
		e, perr := parseEntryID(s)
		if perr != nil {
			err = perr
		}
		return e
	}
	in.length, in.added = num(arr[1]), num(arr[2])
	in.maxDeleted = id(arr[3], false)
	in.first, in.last = id(arr[4], true), id(arr[5], true)
	in.lastGen = id(arr[6], false)
	entries := make([]entry, 0, (len(arr)-head)/3)
	for i := head; i < len(arr); i += 3 {
		data, ok1 := arr[i+1].(string)
		pk, ok2 := arr[i+2].(string)
		if !ok1 || !ok2 {
			return streamInfo{}, nil, fmt.Errorf("unexpected entry in script reply")
		}
		entries = append(entries, entry{id: id(arr[i], false), data: data, pk: pk})
	}
	if err != nil {
		return streamInfo{}, nil, err
	}
	return in, entries, nil
}
