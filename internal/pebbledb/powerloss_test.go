package pebbledb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/idem-run/idem/store"
)

// powerLossRoundsEnv sets how many crashes TestPowerLoss simulates; CI runs
// the default, a soak runs, say, IDEM_POWERLOSS_ROUNDS=2000.
const powerLossRoundsEnv = "IDEM_POWERLOSS_ROUNDS"

// powerLossSeedEnv replays a failing run: TestPowerLoss logs its seed.
const powerLossSeedEnv = "IDEM_POWERLOSS_SEED"

const (
	plCommitters = 4 // goroutines committing pipelined Writes
	plPutters    = 2 // goroutines putting records
	plDepth      = 4 // pipelined commits applied and not yet synced, at most
	// plEpoch is how many crashes one filesystem goes through before the
	// test starts over on a fresh one: the files a crash undeletes pile up.
	plEpoch = 25
)

// plPut is one Put a putter attempted.
type plPut struct {
	data  [3]string
	res   []PutResult // set once acknowledged
	acked bool        // acknowledged before the crash
}

// powerLoss is the model TestPowerLoss checks each recovered DB against.
type powerLoss struct {
	t *testing.T
	// Per committer: the checkpoint recovered at the last open, the
	// highest commit ever applied, and, in the round running, the commits
	// applied and acknowledged (synced) so far.
	committed [plCommitters]uint64
	maxTried  [plCommitters]uint64
	// checked is each committer's checkpoint at the last check.
	checked [plCommitters]uint64
	applied [plCommitters]atomic.Uint64
	acked   [plCommitters]atomic.Uint64
	// appliedAt is each committer's last applied commit at the crash:
	// readers could see it.
	appliedAt [plCommitters]uint64
	// Every Put ever attempted, under mu.
	mu   sync.Mutex
	puts []*plPut
	// How often a crash lost a committer's commit that readers had seen:
	// what SIGKILL never does.
	lostVisible int
}

func plMark(g int, i uint64) store.MarkKey {
	var k store.MarkKey
	copy(k[:], fmt.Sprintf("g%d/%d", g, i))
	return k
}

func plFailure(g int, i uint64) string { return fmt.Sprintf("f/%d/%d", g, i) }

// noLinkFS is a filesystem without hard links, so that Pebble copies the
// tables it ingests (vfs.LinkOrCopy). A crashable vfs.MemFS's Link takes
// its clone lock twice, and deadlocks against a CrashClone that waits
// between the two; a disk's link has no such lock.
type noLinkFS struct{ vfs.FS }

func (noLinkFS) Link(oldname, newname string) error {
	return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: errors.ErrUnsupported}
}

// TestPowerLoss proves the claim that pipelined commits rest on: a crash
// loses a suffix of whole writes, and nothing acknowledged. Unlike TestKill,
// whose SIGKILL leaves the OS page cache to finish every write, this one
// loses what was not synced: Pebble runs on vfs.NewCrashableMem, and at a
// random point under load (concurrent pipelined commits, each with a
// checkpoint, a completion mark, a state counter and sometimes an on-failure
// record, and concurrent Puts) the filesystem is cloned as a power cut would
// leave it (only synced data, plus a random share of the rest), and the DB
// reopened on the clone, many times over. After each crash:
//
//   - every commit acknowledged (its synced returned nil) and every Put that
//     returned before the crash is there;
//   - each committer's writes survive as a prefix: its checkpoint c, its
//     state counter equals c, it has the marks of commits 1..c and of none
//     after, and the on-failure records of exactly commits 1..c, once each:
//     a commit's checkpoint, marks, state and records land together or not
//     at all;
//   - each Put's records are all there, where Put said, or none is.
func TestPowerLoss(t *testing.T) {
	rounds := 50
	if s := os.Getenv(powerLossRoundsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", powerLossRoundsEnv, s)
		}
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(powerLossSeedEnv); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", powerLossSeedEnv, s, err)
		}
		seed = n
	}
	t.Logf("%d rounds, seed %d (%s=%d replays it)", rounds, seed, powerLossSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1^0x9e3779b97f4a7c15))
	var m *powerLoss
	var fs *vfs.MemFS
	lost := 0
	for round := 0; ; round++ {
		fresh := round%plEpoch == 0 && round < rounds
		if fresh {
			// The crash that ended the epoch was checked: start over.
			fs, m = vfs.NewCrashableMem(), &powerLoss{t: t}
		}
		// Spills of a few marks each, so that crashes land before, in
		// and after them.
		db, err := Open("db", withFS(noLinkFS{fs}), WithDiskReserve(0), withSpillMarksAt(1+round%7))
		if err != nil {
			t.Fatalf("round %d: reopening after the crash: %v", round, err)
		}
		if fresh {
			mustCreate(t, db, "s", 2)
			mustCreate(t, db, "dlq", 1)
		}
		m.check(round, db, rng)
		if round == rounds || t.Failed() {
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			break
		}
		fs = m.load(round, db, fs, rng)
		lost += m.lostVisible
		m.lostVisible = 0
		if t.Failed() {
			return
		}
	}
	lost += m.lostVisible
	t.Logf("%d crashes; %d lost commits readers had seen", rounds, lost)
	if rounds >= 50 && lost == 0 {
		t.Errorf("in %d crashes no visible, unsynced write was lost: the test does not simulate power loss", rounds)
	}
}

// load runs writers on db until a random number of writes, crashes the
// filesystem under them, stops them, closes db and returns the crashed
// filesystem.
func (m *powerLoss) load(round int, db *DB, fs *vfs.MemFS, rng *rand.Rand) *vfs.MemFS {
	t := m.t
	ctx := context.Background()
	crashAt := int64(20 + rng.IntN(300))
	var ops atomic.Int64
	crash := make(chan struct{})
	var crashOnce sync.Once
	var stop atomic.Bool
	tick := func() {
		if ops.Add(1) == crashAt {
			crashOnce.Do(func() { close(crash) })
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, plCommitters+plPutters)
	for g := range plCommitters {
		m.applied[g].Store(m.committed[g])
		m.acked[g].Store(m.committed[g])
		grng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		first := m.committed[g] + 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			var queue []func() error
			var queued []uint64
			sync1 := func() error {
				if err := queue[0](); err != nil {
					return err
				}
				m.acked[g].Store(queued[0])
				queue, queued = queue[1:], queued[1:]
				return nil
			}
			for i := first; !stop.Load(); i++ {
				w := &store.Write{
					Checkpoint:    store.CheckpointKey{Mapping: "m", Stream: "s", Shard: strconv.Itoa(g)},
					NewCheckpoint: store.Checkpoint{Sequence: sq(i)},
					Marks:         []store.Mark{{Key: plMark(g, i), Expires: time.Now().Add(time.Hour)}},
					State:         []store.StateOp{{Namespace: "n", Key: strconv.Itoa(g), Value: []byte(strconv.FormatUint(i, 10))}},
				}
				if i%5 == 0 {
					w.Failures = []store.Failure{{Destination: "dlq", Metadata: []byte(plFailure(g, i))}}
				}
				synced, err := db.CommitPipelined(ctx, w)
				if err != nil {
					errs <- fmt.Errorf("committer %d commit %d: %w", g, i, err)
					return
				}
				m.applied[g].Store(i)
				queue, queued = append(queue, synced), append(queued, i)
				if len(queue) > plDepth-1 || grng.IntN(3) == 0 {
					if err := sync1(); err != nil {
						errs <- fmt.Errorf("committer %d sync: %w", g, err)
						return
					}
				}
				tick()
			}
			for len(queue) > 0 {
				if err := sync1(); err != nil {
					errs <- fmt.Errorf("committer %d sync: %w", g, err)
					return
				}
			}
		}()
	}
	for p := range plPutters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				put := &plPut{}
				recs := make([]PutRecord, len(put.data))
				for j := range recs {
					put.data[j] = fmt.Sprintf("p/%d/%d/%d/%d", round, p, i, j)
					recs[j] = PutRecord{PartitionKey: fmt.Sprintf("k%d-%d", i%7, j), Data: []byte(put.data[j])}
				}
				m.mu.Lock()
				m.puts = append(m.puts, put)
				m.mu.Unlock()
				res, err := db.Put(ctx, "s", recs)
				if err != nil {
					errs <- fmt.Errorf("putter %d put %d: %w", p, i, err)
					return
				}
				m.mu.Lock()
				put.res = res
				m.mu.Unlock()
				tick()
			}
		}()
	}

	select {
	case <-crash:
	case err := <-errs:
		stop.Store(true)
		wg.Wait()
		db.Close()
		t.Fatalf("round %d: %v", round, err)
	}
	// What was acknowledged before the crash must survive it.
	for g := range plCommitters {
		m.committed[g] = m.acked[g].Load()
		m.appliedAt[g] = m.applied[g].Load()
	}
	m.mu.Lock()
	for _, p := range m.puts {
		p.acked = p.acked || p.res != nil
	}
	m.mu.Unlock()
	cfg := vfs.CrashCloneCfg{}
	if rng.IntN(2) == 1 {
		cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))}
	}
	crashed := fs.CrashClone(cfg)

	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("round %d: %v", round, err)
	default:
	}
	if err := db.Close(); err != nil {
		t.Fatalf("round %d: close: %v", round, err)
	}
	for g := range plCommitters {
		m.maxTried[g] = max(m.maxTried[g], m.applied[g].Load())
	}
	return crashed
}

// check compares db, just reopened after a crash, with the model, and
// records what it recovered.
func (m *powerLoss) check(round int, db *DB, rng *rand.Rand) {
	t := m.t
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	wantDLQ := map[string]bool{}
	for g := range plCommitters {
		var c uint64
		cp, ok, err := db.Checkpoint(ctx, store.CheckpointKey{Mapping: "m", Stream: "s", Shard: strconv.Itoa(g)})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if ok {
			c = num(cp.Sequence)
		}
		if c < m.committed[g] {
			t.Fatalf("round %d: committer %d recovered checkpoint %d, below acknowledged commit %d", round, g, c, m.committed[g])
		}
		if c > m.maxTried[g] {
			t.Fatalf("round %d: committer %d recovered checkpoint %d, above anything committed (%d)", round, g, c, m.maxTried[g])
		}
		if c < m.appliedAt[g] {
			m.lostVisible++
		}
		v, err := db.State(ctx, "n", strconv.Itoa(g))
		if c == 0 && err == nil || c > 0 && (err != nil || string(v) != strconv.FormatUint(c, 10)) {
			t.Fatalf("round %d: committer %d: checkpoint %d but state %q, %v", round, g, c, v, err)
		}
		// The marks of every commit since the last check, and a sample
		// of older ones: a Get opens every table it looks in, which the
		// race detector's invariant checks make slow.
		var is []uint64
		lo := max(m.checked[g], plDepth) - plDepth + 1
		for i := lo; i <= m.maxTried[g]; i++ {
			is = append(is, i)
		}
		for range min(lo-1, 16) {
			is = append(is, 1+rng.Uint64N(lo-1))
		}
		keys := make([]store.MarkKey, len(is))
		for j, i := range is {
			keys[j] = plMark(g, i)
		}
		done := make([]bool, len(keys))
		if err := db.Completed(ctx, keys, now, done); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for j, d := range done {
			if d != (is[j] <= c) {
				t.Fatalf("round %d: committer %d: checkpoint %d but the mark of commit %d present=%v", round, g, c, is[j], d)
			}
		}
		m.checked[g] = c
		for i := uint64(5); i <= c; i += 5 {
			wantDLQ[plFailure(g, i)] = true
		}
		m.committed[g] = c
	}
	dlq, err := db.Read(ctx, "dlq", ShardID(0), sq(0), 1_000_000, 1<<30)
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	for _, r := range dlq.Records {
		if !wantDLQ[string(r.Data)] {
			t.Fatalf("round %d: on-failure record %q of a lost commit, or twice", round, r.Data)
		}
		delete(wantDLQ, string(r.Data))
	}
	if len(wantDLQ) > 0 {
		t.Fatalf("round %d: on-failure records of recovered commits missing: %v", round, wantDLQ)
	}

	at := map[string]PutResult{}
	for _, sh := range []string{ShardID(0), ShardID(1)} {
		res, err := db.Read(ctx, "s", sh, sq(0), 1_000_000, 1<<30)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, r := range res.Records {
			if _, dup := at[string(r.Data)]; dup {
				t.Fatalf("round %d: record %q twice", round, r.Data)
			}
			at[string(r.Data)] = PutResult{Shard: sh, Sequence: num(r.Sequence)}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.puts {
		n := 0
		for j, d := range p.data {
			got, ok := at[d]
			if !ok {
				continue
			}
			n++
			delete(at, d)
			if p.res != nil && got != p.res[j] {
				t.Fatalf("round %d: record %q at %+v, Put said %+v", round, d, got, p.res[j])
			}
		}
		if n != 0 && n != len(p.data) {
			t.Fatalf("round %d: %d of the %d records of one Put survived: %q", round, n, len(p.data), p.data)
		}
		if p.acked && n == 0 {
			t.Fatalf("round %d: acknowledged Put %q lost", round, p.data)
		}
		// A Put the crash cut short is lost for good; the next
		// round's model forgets that it was ever answered.
		p.acked = n > 0
		if n == 0 {
			p.res = nil
		}
	}
	if len(at) > 0 {
		t.Fatalf("round %d: %d records nobody put", round, len(at))
	}
}
