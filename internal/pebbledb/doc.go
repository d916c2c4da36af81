// Package pebbledb is idem's embedded storage: the embedded streams and the
// embedded store in one Pebble database, so that a batch's checkpoint,
// completion marks, state and on-failure records commit in one atomic,
// synced Pebble batch. Splitting them over two databases would reopen the
// window exactly-once exists to close.
//
// # Delivery semantics
//
// Every Put and Commit is written with pebble.Sync: once it returns nil, a
// crash (even kill -9 or power loss on a disk that honours fsync) loses
// nothing of it. Concurrent writers share fsyncs through Pebble's group
// commit: sequences are allocated under a short per-stream lock, the batch
// is committed outside any lock, and a shard's records become visible to
// readers only up to the highest sequence below which every allocation has
// committed. A reader therefore never sees sequence N+1 before N.
//
// Sequences of a shard start at 1 and are contiguous, with one exception:
// the numbers of a write that failed, or that a crash cut short while a
// later write had already committed, may be skipped, leaving a gap where
// records nobody was told about would have been. Readers must rely on
// order, not contiguity.
//
// Retention deletes records older than the stream's retention whether or not
// anyone read them; Read reports them in source.ReadResult.Lost.

// A crash, power loss included, loses at most a suffix of whole writes, and
// nothing acknowledged: TestPowerLoss crashes an in-memory filesystem that
// drops unsynced data (vfs.NewCrashableMem) under load, many times, and
// checks that each commit's checkpoint, marks, state and on-failure records
// survive together or not at all.
//
// # Marks: a journal, then runs
//
// A commit writes its completion marks as one journal entry, filed in
// memory once applied (journal.go), not as a Pebble key each: a key each
// cost an insert at a random place of the memtable's skiplist per record
// keyed by its payload, the largest part of the engine's time with such
// keys. The sweeper spills the journal, about every 130,000 marks and at
// every sweep, into a run (runs.go): one sorted table under a run number
// of its own, which Pebble ingests into its last level and never
// compacts, then deletes the entries spilled. Runs merge as they
// accumulate, mergeFanIn of one size class at a time, and a sweep deletes
// a run whole once all its marks have expired. Open lists the runs, files
// the journal in memory again, and removes the tables of a spill or merge
// a crash cut short (in the spill directory).
//
// Of two marks of one key, the one that expires later counts. (The
// engine writes a mark to expire a mapping's mark TTL after its commit,
// so a later one expires earlier only after the TTL was shortened; mark
// keys of earlier versions hold the later write.)
//
// # Mark lookups
//
// Completion marks are looked up for every record keyed by its payload,
// and most of those keys were never marked. A Bloom filter of the mark
// keys in memory (markfilter.go), built at Open from the marks on disk and
// added to by each commit before its batch is applied, answers those
// without reading Pebble; it never misses a mark. The journal's marks are
// found in memory; the rest in the runs, newest first, each sought only in
// the runs whose own filter (1 byte a mark) may hold it. The filter costs
// about 2 to 5 bytes a live mark (and 2 MiB at least, once it holds any),
// the sweep drops its parts whose marks all expired, and
// WithMarkFilterMemory bounds it with the runs' filters: beyond the
// bound, lookups go on to Pebble ever more often. The journal's marks
// take a table of 6 MiB, and a spare of the same size between spills
// (journal.go).
//
// # A full disk
//
// A write that would leave the data directory's filesystem with less free
// space than the reserve (WithDiskReserve, 64 MiB by default) is refused
// before it reaches Pebble, with an error wrapping store.ErrNoSpace: nothing
// of it lands, and writes resume by themselves once space is freed. Free
// space is read with statfs at most every 100ms or every sixteenth of the
// reserve written. Health reports the condition for readiness checks.
//
// Pebble can still meet a full disk (or another I/O error) writing or
// syncing its write-ahead log; its state then leaves no safe way on, and it
// says so through Logger.Fatalf. There the DB fails (every later method
// returns an error wrapping ErrFatal, and store.ErrNoSpace for a full disk),
// logs the cause, and exits the process with a clear message (WithFatal)
// rather than wedge with writes hanging in Pebble's commit pipeline. A
// restart recovers every acknowledged write.
//
// # One process per directory
//
// Pebble's LOCK file keeps a second process (or a second Open in this one)
// out of a data directory; Open then fails with ErrLocked, naming the pid of
// the holder, which it finds in the idem.pid file the holder wrote.
//
// # Key encoding
//
// The format below is stable: a data directory written by one version of
// idem is read by the next. Keys start with one byte naming the keyspace.
// Strings are length-prefixed, str(x) = uvarint(len(x)) | x, so any bytes
// may appear in a name without two keys ever colliding; integers in keys are
// big-endian so that byte order is numeric order.
//
//	keyspace     key                                                value
//	format       'f'                                                v
//	stream meta  'm' | str(stream)                                  v | uvarint shards | varint retention ns
//	record       's' | str(stream) | u16 shard | u64 seq (seq ≥ 1)  v | varint arrival ns | uvarint len(pk) | pk | data
//	horizon      's' | str(stream) | u16 shard | u64 0              v | uvarint trimmed
//	checkpoint   'c' | str(mapping) | str(stream) | str(shard)      v | uvarint seq, processed, skipped, discarded, lost
//	progress     'p' | str(scope) | str(stream) | str(shard)        v | uvarint high | uvarint n | n × uvarint delta
//	mark         'k' | 16-byte store.MarkKey                        v | varint expires ns
//	journal      'j' | u64 seq (seq ≥ 1)                            v | runs: varint expires ns | uvarint n | n × 16-byte MarkKey
//	expiry       'x' | u64 (expires ns XOR 1<<63) | 16-byte MarkKey (empty)
//	run header   'r' | u64 run                                      v | uvarint marks | varint latest expires ns
//	run mark     'r' | u64 run | 16-byte store.MarkKey              v | varint expires ns
//	state        'v' | str(namespace) | str(key)                    v | value bytes
//	legacy keys  'h'                                                v | varint ns the last FNV-1a-keyed mark or claim expires (0: none)
//
// A record key is laid out so that one shard's records are one contiguous,
// ordered key range:
//
//	+-----+------------------+----------------+-------------+
//	| 's' | uvarint len|name | shard (2B, BE) | seq (8B, BE)|
//	+-----+------------------+----------------+-------------+
//
// The horizon key sorts just before a shard's first record and holds
// "trimmed", the highest sequence retention has deleted (absent means 0); the
// lowest retained sequence is trimmed+1. Keeping it inside the shard's key
// range lets a Read learn about deleted records from the same iterator,
// hence the same snapshot, as the records themselves.
//
// Mark keys ('k') and expiry entries ('x') are what versions before runs
// wrote (and WithDirectMarks writes): Open reads them, lookups and sweeps
// go on handling them, and nothing else adds to them. Each such mark has
// an expiry entry, ordered by expiry time (the sign bit is
// flipped so that byte order is the order of signed nanoseconds), so that
// purging expired marks reads only the expired ones. An entry can outlive a
// renewal of its mark; the purge deletes a mark only if the mark itself has
// expired.
//
// Progress stores Above as deltas: the first from HighWater, each next from
// its predecessor, all at least 1.
//
// # Value versioning
//
// Every value starts with a version byte v, currently 1. A decoder refuses a
// version it does not know rather than guess; a new version of a value gets a
// new byte, and decoders keep reading the old ones. The 'f' key holds the
// version of the layout as a whole; Open refuses a directory written by a
// newer layout. Layout 2 added the mark journal, layout 3 the runs: a
// program that reads an earlier layout only would miss the marks they
// hold, and refuses it. Open upgrades a layout 1 or 2 directory in place.
// Close, once it has spilled the journal whole, writes layout 1 back if no
// run is left (a directory that never held a mark, or whose marks all
// expired), so that an earlier version opens it.
package pebbledb
