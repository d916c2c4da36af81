package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idem-run/idem/store"
)

// Record claims (store.RecordClaims) are session-level advisory locks,
// held by one session of the Store's own, its lock session, and counted
// in this process by a table of who holds what (lockSession.held).
//
// Why locks and not rows: a claim row upserted at the claim and deleted at
// the commit cost more of the server's time than anything else a record
// keyed by its payload does, some 25 µs a key (BENCHMARKS.md); taking and
// releasing a lock costs about 1 µs, writes no heap, index or WAL, and
// goes with its session if the process dies.
//
// What a claim means, then:
//
//   - Between owners of one process (the shards of one Store), claims are
//     decided by the table, with the leases the caller gives: an owner
//     takes its own claim again at once, and another owner's once its
//     lease ended, as with rows, unless a commit of that owner under its
//     claim (a Write's MarkOwner) is in flight.
//   - Between processes, a key is held while another process's lock
//     session holds its lock, whatever the lease: until that process's
//     commit ends the claim, its shard goes idle or stops
//     (ReleaseRecordClaims), it ends (its session ends with it), or its
//     lease ended more than lockSweepGrace ago (the lock session's sweep
//     lets it go). A process that hangs whole, so that its lock session
//     stops answering, is cut off by the server after lockSessionIdle
//     (idle_session_timeout, PostgreSQL 14 and later) or by TCP
//     keepalives.
//   - A commit's mark ends any claim on its key, whoever holds it (a
//     commit under a MarkOwner lands only on that owner's claims, below):
//     a claimer that cannot take a key's lock looks its mark up before it
//     calls the key in progress.
//
// As with the UNLOGGED rows before, claims are not durable: a PostgreSQL
// restart, a failover, or a lost lock session (a broken connection) ends
// them all, and records in flight then may run a second time,
// concurrently with their first run. Their completion still commits
// through Commit, durably. But a run under a lost claim does not commit
// beside a run elsewhere: a commit that ends claims of the lock session is
// gated (commitGate). Each lock session registers in lock_sessions with
// two locks of its own: its liveness lock, which it holds while it lives,
// and its gate. In its own transaction, the commit takes the gate,
// shared, then checks that the session still holds its liveness lock; if
// the session ended, the commit is refused (store.ErrRecordClaimLost), and
// the record runs again under a new claim. A claimer, once it took its
// keys' locks, looks for registered sessions that ended: while the gate
// of one is taken, a commit of it may still land on the keys just taken,
// so it takes none of them this time. A claim swept after its lease is
// lost likewise, and a claim that ends while a commit of its key is in
// flight keeps its lock until that commit ends.
//
// Nor does a run whose claim another owner took over commit (a Write's
// MarkOwner, which the engine sets on every commit that marks records):
// an owner that stalled past its lease may have lost the claim to
// another owner of this process, which may have run the record since.
// So gate, under the table's mutex, refuses a Write whose MarkOwner does
// not hold a key it marks: one the table gives another owner, or that
// another owner's commit holds in flight, is refused at once
// (store.ErrRecordClaimLost), with no SQL. A key MarkOwner holds
// (whatever its lease) passes, as it does in the engine's every commit,
// at the cost of a look at the table; and until the commit ends no
// other owner of this process takes it over (inFlight.sealed), so that
// the claim checked is still MarkOwner's when the marks land. A key the
// table does not hold at all must be neither claimed nor marked: the
// commit checks it in its own transaction, before the marks
// (check_unclaimed: IDM03 if another session holds the key's lock,
// another process's, or the lock session while it lets go a claim that
// just ended, or if any row of marks holds the key, expired or not; it
// then holds the key's lock until the commit ends, so no claimer takes
// the key meanwhile), a statement sent only when there are such keys.
//
// The lock session needs a connection of its own, outside the pool and
// not through a proxy that pools transactions (session locks would not
// follow it), made at the first claim. Each held claim takes a slot of
// PostgreSQL's lock table (max_locks_per_transaction × (max_connections
// + max_prepared_transactions) slots, 6,400 by default), so the claims
// held at once (about shards × batchSize × parallelizationFactor) must fit
// in it beside the server's other locks. A claim that would make one
// Store's claims more than the table's size is refused with an error that
// says so, rather than sent to fill the table, which would fail the call
// and end every claim of the session.

// lockSessionIdle is the lock session's idle_session_timeout: the server
// ends a session that sent nothing for this long, which frees the claims
// of a process stopped whole (its heartbeat, every lockHeartbeat, stopped
// too).
const lockSessionIdle = time.Minute

// lockHeartbeat is how often an otherwise idle lock session is used, so
// that the server never ends a live process's session; it is also how
// often expired claims are swept.
const lockHeartbeat = 10 * time.Second

// lockSweepGrace is how long after its lease ended a claim nobody took is
// kept before the sweep lets its lock go: in this process an expired claim
// is free at once (the table decides), and another process waits this
// much longer, the time a slow commit of the holder may still take.
const lockSweepGrace = 30 * time.Second

// LockSessionName is the application_name of the lock session a Store
// over schema keeps for its record claims (pg_stat_activity shows it): a
// connection outside the pool, made at the first claim, that holds them as
// session-level advisory locks.
func LockSessionName(schema string) string { return "idem record claims " + schema }

// lockCallTimeout bounds one call on the lock session.
const lockCallTimeout = 30 * time.Second

// lockLostKeep is how long a claim the sweep let go is remembered as lost
// (lockSession.lost): a late commit of its run within it is refused. A run
// that goes on longer renews its claims first, which takes the key again
// or finds it taken.
const lockLostKeep = 10 * time.Minute

// heldClaim is one key's claim in the lock session's table.
type heldClaim struct {
	owner store.MarkKey
	// until is the lease's end, in the clock of the caller that took it
	// (store.RecordClaims.Now's).
	until time.Time
	// sweepAt is when the sweep lets the lock go, on this host's clock:
	// the lease's length after the claim, plus lockSweepGrace.
	sweepAt time.Time
}

// inFlight is what the commits in flight of one key hold (committing).
type inFlight struct {
	// n counts the commits of the key in flight.
	n int
	// sealed counts those of them conditional on owner's claim
	// (store.Write.MarkOwner, which held the key when the commit began).
	// While any is in flight, no other owner of this process takes the
	// key (take), nor commits it under its own MarkOwner (gate): the
	// claim the commit checked stays owner's until it landed.
	sealed int
	owner  store.MarkKey
}

// lockSession takes and keeps the Store's record claims: one connection,
// used by one call at a time, and the table of the claims it holds.
type lockSession struct {
	s    *Store
	salt uint64

	// callMu serializes the calls on conn, and so the taking of claims:
	// take decides from the table, calls, and writes the table under it,
	// so that no two claims of this process try one lock (a session's
	// locks are counted: both would get it).
	callMu sync.Mutex
	conn   *pgx.Conn // nil until the first claim, and after a loss
	last   time.Time // when conn was last used
	// room is how many locks the claims may hold at once: the size of
	// the server's lock table, read when conn was opened.
	room int

	mu     sync.Mutex
	held   map[store.MarkKey]heldClaim
	unlock []int64 // locks to let go at conn's next use
	// liveLock is the liveness lock of conn, which it holds while it
	// lives, and gateLock its gate, which gated commits take: random IDs,
	// registered in lock_sessions when it was opened.
	liveLock, gateLock int64
	// committing holds, for each key the table held when a commit that
	// marks it began, the commits of it in flight; parked counts the
	// locks of those keys whose claims ended meanwhile. They are let go
	// once the key's last commit ended (done), so that nobody takes the
	// key while a commit of it may still land.
	committing map[store.MarkKey]inFlight
	parked     map[store.MarkKey]int
	// lost holds the claims a lost session took with it, or the sweep let
	// go, until each is taken again or its time passes: a commit that
	// marks one of them is refused (gate), for its record may have run
	// elsewhere meanwhile.
	lost map[store.MarkKey]time.Time
	// sessions counts the lock sessions opened, for tests.
	sessions int

	wake chan struct{} // a claim ended: let its lock go soon
}

func newLockSession(s *Store) *lockSession {
	sum := sha256.Sum256([]byte("idem record claims\x00" + s.schema))
	return &lockSession{
		s:          s,
		salt:       binary.BigEndian.Uint64(sum[:8]),
		held:       map[store.MarkKey]heldClaim{},
		committing: map[store.MarkKey]inFlight{},
		parked:     map[store.MarkKey]int{},
		lost:       map[store.MarkKey]time.Time{},
		wake:       make(chan struct{}, 1),
	}
}

// lockID is key's advisory lock: its first 8 bytes (a SHA-256's, so
// uniform) mixed with the schema's salt, so that stores on other schemas
// of one database never contend. Two keys that share an ID contend for
// nothing worse than a wait.
func (l *lockSession) lockID(key store.MarkKey) int64 {
	return int64(binary.BigEndian.Uint64(key[:8]) ^ l.salt)
}

// claimPlan is how ClaimRecords decides a key before its call.
type claimPlan uint8

const (
	planLock  claimPlan = iota // not in the table: try its lock
	planTake                   // the caller's own claim, or an expired one: take it in the table
	planOther                  // another owner's live claim in this process
)

// claim implements Store.ClaimRecords; see the comment at the top.
//
// It decides from the table which keys need their lock tried (no owner of
// this process holds them) and which another owner of this process holds,
// tries those locks in one call on the lock session, and writes what it
// took into the table at once, so that the process's other claims see it.
// Then, on a connection of the pool, so that the claims of several shards
// overlap there, it checks the fence and looks the marks up (marks_of),
// and settles each key: a marked key's claim ends, and so does every claim
// the call took past the first key held elsewhere (the claim an owner had
// before is kept as it was). Locks that end are let go by the session
// soon after, not before the claim returns.
func (l *lockSession) claim(ctx context.Context, c *store.RecordClaims) error {
	n := len(c.Keys)
	first := make([]int, n) // each key's first place
	plans := make([]claimPlan, n)
	prev := make([]heldClaim, n) // a planTake key's claim before this one
	locks := make([]pgtype.Int8, n)
	got, err := l.take(ctx, c, first, plans, prev, locks)
	if err != nil {
		return err
	}

	var marked []bool
	if c.Marks || c.Fence != nil {
		var fenceKey []byte
		var fenceToken pgtype.Int8
		if f := c.Fence; f != nil {
			fenceKey = f.Key[:]
			fenceToken = pgtype.Int8{Int64: int64(f.Token), Valid: true}
		}
		keys := keyArgs(c.Keys)
		if !c.Marks {
			keys = [][]byte{}
		}
		var found []bool
		err := l.s.pool.QueryRow(ctx, l.s.q.marksOf, keys, c.Now, fenceKey, fenceToken).Scan(&found)
		if err == nil && c.Marks && len(found) != n {
			err = fmt.Errorf("%d marks answered for %d keys", len(found), n)
		}
		if err != nil {
			l.ending(func() { l.giveBack(c, 0, plans, prev) })
			return l.s.claimErr(c.Fence, err)
		}
		if c.Marks {
			marked = found
		}
	}
	if marked == nil {
		marked = make([]bool, n)
	}

	l.ending(func() { l.settle(c, first, plans, prev, got, marked) })
	return nil
}

// settle sets each key's status from its plan, its lock and its mark,
// ends the claims of marked keys, and gives back what take wrote past the
// first key held elsewhere. l.mu is held.
func (l *lockSession) settle(c *store.RecordClaims, first []int, plans []claimPlan, prev []heldClaim, got, marked []bool) {
	n := len(c.Keys)
	held := n
	for i, k := range c.Keys {
		switch {
		case i > held:
			continue
		case first[i] != i:
			c.Status[i] = c.Status[first[i]]
			continue
		}
		switch p := plans[i]; {
		case marked[i]:
			c.Status[i] = store.Completed
			if p != planOther {
				l.endOwn(k, c.Owner)
			}
		case p == planOther:
			// A claim that ended while a commit of its owner is in
			// flight (sealed) is held until that commit ends: soon.
			until := c.Now
			if h, ok := l.held[k]; ok {
				until = h.until
			}
			c.Status[i], c.HeldUntil, held = store.InProgress, until, i
		case p == planLock && !got[i]:
			// Another process holds it, under a lease not known here.
			c.Status[i], c.HeldUntil, held = store.InProgress, c.LeaseUntil, i
		default:
			c.Status[i] = store.Acquired
			delete(l.lost, k)
		}
	}
	if held < n {
		l.giveBack(c, held+1, plans, prev)
	}
}

// take decides each key's plan, tries the locks of the planLock keys on
// the lock session, and writes the claims taken (planTake, and planLock
// keys whose lock it got) into the table, in the caller's name, all under
// callMu. It fills first, plans, prev and locks, and returns whether each
// key's lock was got.
func (l *lockSession) take(ctx context.Context, c *store.RecordClaims, first []int, plans []claimPlan, prev []heldClaim, locks []pgtype.Int8) ([]bool, error) {
	l.callMu.Lock()
	defer l.callMu.Unlock()
	if err := l.connect(ctx); err != nil {
		return nil, err
	}
	seen := make(map[store.MarkKey]int, len(c.Keys))
	tries := 0
	l.mu.Lock()
	for i, k := range c.Keys {
		if f, ok := seen[k]; ok {
			first[i], plans[i] = f, planOther // repeats take nothing
			continue
		}
		seen[k], first[i] = i, i
		h, ok := l.held[k]
		switch {
		case l.sealedFrom(k, c.Owner):
			// Another owner's commit that holds its claim is in
			// flight, whether its claim still lives or not.
			plans[i] = planOther
		case !ok:
			plans[i], locks[i] = planLock, pgtype.Int8{Int64: l.lockID(k), Valid: true}
			tries++
		case h.owner == c.Owner || !c.Now.Before(h.until):
			plans[i], prev[i] = planTake, h
		default:
			plans[i] = planOther
		}
	}
	if held := len(l.held) + len(l.unlock) + len(l.parked); tries > 0 && held+tries > l.room {
		// Past it, a full lock table would fail the call, and end every
		// claim of the session with it.
		l.mu.Unlock()
		return nil, fmt.Errorf("%d record claims held and %d more asked for: over %d, the size of PostgreSQL's lock table "+
			"(max_locks_per_transaction × (max_connections + max_prepared_transactions)): "+
			"raise max_locks_per_transaction, or claim fewer records at once (shards × batchSize × parallelizationFactor)", held, tries, l.room)
	}
	unlock := l.unlock
	l.unlock = nil
	l.mu.Unlock()
	if unlock == nil {
		unlock = []int64{}
	}
	var got []bool
	err := l.use(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, l.s.q.claimLocks, locks, unlock, l.liveLock).Scan(&got)
	})
	if err == nil && len(got) != len(locks) {
		err = fmt.Errorf("%d locks answered for %d keys", len(got), len(locks))
	}
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	sweepAt := time.Now().Add(c.LeaseUntil.Sub(c.Now) + lockSweepGrace)
	for i, k := range c.Keys {
		switch p := plans[i]; {
		case p == planTake && l.sealedFrom(k, c.Owner):
			// The owner whose expired claim this takes over began a
			// commit of the key meanwhile (gate), under its claim: the
			// key is held until that commit ends. (A planLock key was
			// not in the table, which only take adds to: no commit can
			// have sealed it since.)
			plans[i] = planOther
		case p == planLock && got[i], p == planTake:
			if _, ok := l.held[k]; p == planTake && !ok && !l.keep(k) {
				// Its claim ended during the call, and its lock, which
				// waits in l.unlock or l.parked, is taken back by
				// keep. Had it been let go already (which callMu rules
				// out: only a call sends l.unlock), the key would be
				// held by nobody: it is reported held, as a lock not
				// got.
				plans[i] = planLock
				continue
			}
			l.held[k] = heldClaim{owner: c.Owner, until: c.LeaseUntil, sweepAt: sweepAt}
		}
	}
	return got, nil
}

// ending runs f, which ends claims, with l.mu held, and wakes the loop to
// let their locks go if it ended any.
func (l *lockSession) ending(f func()) {
	l.mu.Lock()
	before := len(l.unlock)
	f()
	ended := len(l.unlock) > before
	l.mu.Unlock()
	if ended {
		l.signal()
	}
}

// giveBack undoes what take wrote for c's keys from place from on: a claim
// the caller held before gets its earlier lease back, any other ends.
// l.mu is held.
func (l *lockSession) giveBack(c *store.RecordClaims, from int, plans []claimPlan, prev []heldClaim) {
	for i := from; i < len(c.Keys); i++ {
		k := c.Keys[i]
		switch plans[i] {
		case planOther:
		case planTake:
			if h, ok := l.held[k]; ok && h.owner == c.Owner {
				l.held[k] = prev[i]
			}
		default:
			l.endOwn(k, c.Owner)
		}
	}
}

// endOwn ends key's claim if owner holds it. l.mu is held.
func (l *lockSession) endOwn(key, owner store.MarkKey) {
	if h, ok := l.held[key]; ok && h.owner == owner {
		l.end(key)
	}
}

// keep takes key's lock back from the locks to let go, for a claim that a
// commit ended while its owner was taking it again; false if it was let
// go already. l.mu is held.
func (l *lockSession) keep(key store.MarkKey) bool {
	if n := l.parked[key]; n > 1 {
		l.parked[key] = n - 1
		return true
	} else if n == 1 {
		delete(l.parked, key)
		return true
	}
	lock := l.lockID(key)
	for i, u := range l.unlock {
		if u == lock {
			l.unlock = append(l.unlock[:i], l.unlock[i+1:]...)
			return true
		}
	}
	return false
}

// end removes key's claim from the table, and lets its lock go at the
// session's next use, or, while a commit of the key is in flight, once
// that commit ended. l.mu is held.
func (l *lockSession) end(key store.MarkKey) {
	if _, ok := l.held[key]; !ok {
		return
	}
	delete(l.held, key)
	if l.committing[key].n > 0 {
		l.parked[key]++
		return
	}
	l.unlock = append(l.unlock, l.lockID(key))
}

// commitGate is what a commit that marks keys carries in flight, from
// gate to done: the keys the table holds, whose locks no ending claim
// lets go until it ended, and the gate and liveness lock of the session
// that holds them, for commit_gate; under a MarkOwner, that owner, whose
// claims on those keys no other owner takes over meanwhile (sealed), and
// the keys the table does not hold, each once, with their locks, for
// check_unclaimed.
type commitGate struct {
	keys       []store.MarkKey
	gate, live int64
	owner      store.MarkKey
	free       []store.MarkKey
	freeLocks  []int64
}

// gate refuses a Write that marks a key whose claim was lost, or, under
// w.MarkOwner, a key another owner of this process claims, or holds in a
// commit in flight (store.ErrRecordClaimLost); all in memory. It returns
// what w's commit carries in flight (commitGate), or nil if the table
// holds none of w's marks and w has no MarkOwner. The caller sends
// check_unclaimed, when g.free is not empty, before the marks, and
// commit_gate, when g.keys is not empty, last before the commit, and
// calls done once it ended.
func (l *lockSession) gate(w *store.Write) (*commitGate, error) {
	if len(w.Marks) == 0 {
		return nil, nil
	}
	owner := w.MarkOwner
	owned := owner != (store.MarkKey{})
	l.mu.Lock()
	defer l.mu.Unlock()
	var g *commitGate
	refuse := func(err error) (*commitGate, error) {
		l.drop(g)
		return nil, err
	}
	for i := range w.Marks {
		k := w.Marks[i].Key
		if _, ok := l.lost[k]; ok {
			return refuse(claimLostError(k))
		}
		h, held := l.held[k]
		f := l.committing[k]
		if owned {
			switch {
			case held && h.owner != owner:
				return refuse(claimTakenOverError(k, h.owner, owner))
			case l.sealedFrom(k, owner):
				return refuse(claimSealedError(k, f.owner, owner))
			}
		}
		if !held && !owned {
			continue // not a claim of this process: a key by identity
		}
		if g == nil {
			g = &commitGate{gate: l.gateLock, live: l.liveLock, owner: owner}
		}
		if !held {
			g.free = append(g.free, k) // checked in SQL (check_unclaimed)
			continue
		}
		g.keys = append(g.keys, k)
		f.n++
		if owned {
			f.sealed, f.owner = f.sealed+1, owner
		}
		l.committing[k] = f
	}
	if g != nil && len(g.free) > 0 {
		// Each key once, in key order (a key marked twice is checked
		// once, before any of its marks).
		slices.SortFunc(g.free, func(a, b store.MarkKey) int { return bytes.Compare(a[:], b[:]) })
		g.free = slices.Compact(g.free)
		g.freeLocks = make([]int64, len(g.free))
		for i, k := range g.free {
			g.freeLocks[i] = l.lockID(k)
		}
	}
	return g, nil
}

// The errors gate refuses a commit with, made in functions of their own:
// formatting a key where gate loops would have it escape, and allocate,
// at every key.

// claimLostError refuses the commit of key whose claim was lost.
func claimLostError(key store.MarkKey) error {
	return fmt.Errorf("mark %x: %w (its lock session ended, or it was swept after its lease): "+
		"the record may have run elsewhere since, so this commit is refused and the key must be claimed again",
		key, store.ErrRecordClaimLost)
}

// claimTakenOverError refuses owner's commit of key, whose claim holder
// took over.
func claimTakenOverError(key, holder, owner store.MarkKey) error {
	return fmt.Errorf("mark %x: %w: owner %x claims it, not the commit's owner %x (taken over once its lease ended): "+
		"the record may have run since, so this commit is refused and the key must be claimed again",
		key, store.ErrRecordClaimLost, holder[:8], owner[:8])
}

// claimSealedError refuses owner's commit of key while a commit of
// holder's claim on it is in flight.
func claimSealedError(key, holder, owner store.MarkKey) error {
	return fmt.Errorf("mark %x: %w: a commit of it under the claim of owner %x, not the commit's owner %x, is in flight: "+
		"this commit is refused and the key must be claimed again",
		key, store.ErrRecordClaimLost, holder[:8], owner[:8])
}

// sealedFrom reports whether a commit in flight of an owner other than
// owner holds key under its claim (inFlight.sealed). l.mu is held.
func (l *lockSession) sealedFrom(key, owner store.MarkKey) bool {
	f, ok := l.committing[key]
	return ok && f.sealed > 0 && f.owner != owner
}

// drop ends g's hold on its keys, and lets go the locks parked until their
// last commit ended. l.mu is held.
func (l *lockSession) drop(g *commitGate) {
	if g == nil {
		return
	}
	sealed := g.owner != (store.MarkKey{})
	for _, k := range g.keys {
		f := l.committing[k]
		f.n--
		if sealed {
			f.sealed--
		}
		if f.n > 0 {
			l.committing[k] = f
			continue
		}
		delete(l.committing, k)
		for range l.parked[k] {
			l.unlock = append(l.unlock, l.lockID(k))
		}
		delete(l.parked, k)
	}
}

// done ends a commit of w, whose gate was g (nil when it had none). If it
// landed, the claims it ended end: those of its marked keys, whoever holds
// them, and those of w.Release that w.ReleaseOwner holds.
func (l *lockSession) done(g *commitGate, w *store.Write, landed bool) {
	if g == nil && (!landed || len(w.Marks) == 0 && len(w.Release) == 0) {
		return
	}
	l.ending(func() {
		l.drop(g)
		if landed {
			for i := range w.Marks {
				l.end(w.Marks[i].Key)
			}
			for _, k := range w.Release {
				l.endOwn(k, w.ReleaseOwner)
			}
		}
	})
}

// releaseOwner ends every claim owner holds.
func (l *lockSession) releaseOwner(owner store.MarkKey) {
	l.ending(func() {
		for k, h := range l.held {
			if h.owner == owner {
				l.end(k)
			}
		}
	})
}

// signal wakes the loop to let ended claims' locks go.
func (l *lockSession) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// loop lets ended claims' locks go soon after they end, sweeps claims
// whose lease ended lockSweepGrace ago, and keeps an idle session alive,
// until ctx is done.
func (l *lockSession) loop(ctx context.Context) {
	defer l.s.wg.Done()
	t := time.NewTicker(lockHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-t.C:
			l.sweep(time.Now())
		}
		if err := l.flush(ctx); err != nil && ctx.Err() == nil {
			l.s.log.Warn("postgres: the lock session of record claims failed; its claims ended, and the next claim opens another",
				"schema", l.s.schema, "err", err)
		}
	}
}

// sweep ends the claims whose sweepAt passed at now, which are lost to
// their owners from then on (another process may take them).
func (l *lockSession) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, h := range l.held {
		if now.After(h.sweepAt) {
			l.end(k)
			l.lost[k] = now.Add(lockLostKeep)
		}
	}
	for k, at := range l.lost {
		if now.After(at) {
			delete(l.lost, k)
		}
	}
}

// flush lets the ended claims' locks go, or, with none, uses a session
// idle for half of lockHeartbeat, so that the server keeps it.
func (l *lockSession) flush(ctx context.Context) error {
	l.callMu.Lock()
	defer l.callMu.Unlock()
	l.mu.Lock()
	unlock := l.unlock
	l.unlock = nil
	l.mu.Unlock()
	if l.conn == nil || (len(unlock) == 0 && time.Since(l.last) < lockHeartbeat/2) {
		return nil // no session holds anything, or it was used lately
	}
	if unlock == nil {
		unlock = []int64{}
	}
	return l.use(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, l.s.q.unlock, unlock)
		return err
	})
}

// use runs f on the lock session, which the caller made sure of (connect,
// or a check for nil). An error of f leaves the session's locks unknown (a statement cut short may have
// taken some), so the session is closed, which lets all of them go, and
// every claim of the table ends. So that one caller's cancellation
// cannot end every owner's claims, f runs under ctx's values but not its
// cancellation, for lockCallTimeout at most. l.callMu is held.
func (l *lockSession) use(ctx context.Context, f func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockCallTimeout)
	defer cancel()
	err := f(ctx, l.conn)
	l.last = time.Now()
	if err == nil {
		return nil
	}
	l.lose()
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "53200" {
		err = fmt.Errorf("%w (PostgreSQL's lock table is full: raise max_locks_per_transaction, or claim fewer records at once)", err)
	}
	return fmt.Errorf("the lock session of record claims failed, and every claim it held ended: %w", l.s.dbErr(err))
}

// connect opens the lock session if there is none, under ctx's values
// but not its cancellation. l.callMu is held.
func (l *lockSession) connect(ctx context.Context) error {
	if err := l.s.enter(); err != nil {
		return err // closed: no session is opened again
	}
	if l.conn != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockCallTimeout)
	defer cancel()
	conn, room, err := l.open(ctx)
	if err != nil {
		return fmt.Errorf("opening the lock session of record claims: %w", l.s.dbErr(err))
	}
	l.conn, l.room = conn, room
	return nil
}

// lose closes the lock session and ends every claim of the table.
// l.callMu is held.
func (l *lockSession) lose() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cancelGrace)
		_ = l.conn.Close(ctx)
		cancel()
		l.conn = nil
	}
	l.mu.Lock()
	for k, h := range l.held {
		l.lost[k] = h.sweepAt
	}
	clear(l.held)
	clear(l.parked)
	l.unlock = nil
	l.liveLock, l.gateLock = 0, 0
	l.mu.Unlock()
}

// open connects a lock session with the pool's settings, and asks the
// server to end it once it has been idle for lockSessionIdle (servers
// before PostgreSQL 14 have no such setting, and rely on TCP keepalives
// alone) and to probe a silent client's TCP connection every few seconds.
// It takes the session's liveness lock, and registers it and the
// session's gate in lock_sessions, for gated commits and claimers to
// check.
// It returns the session and the room its claims have: the size of the
// server's lock table (which other processes and the server's own locks
// share, so a claim within it may still find the table full).
func (l *lockSession) open(ctx context.Context) (*pgx.Conn, int, error) {
	cfg := l.s.pool.Config().ConnConfig.Copy()
	// So that operators (and tests) can tell it in pg_stat_activity.
	cfg.RuntimeParams["application_name"] = LockSessionName(l.s.schema)
	// Its statements are planned once: none reads a table that a plan
	// made for other values would read worse (the pool's connections
	// force custom plans, which would plan claim_locks' look at
	// lock_sessions again at every call on this one connection that
	// every claim of the process waits on).
	cfg.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, 0, err
	}
	var slots int64
	err = conn.QueryRow(ctx, `SELECT current_setting('max_locks_per_transaction')::bigint *
	(current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)`).Scan(&slots)
	if err != nil {
		_ = conn.Close(ctx)
		return nil, 0, fmt.Errorf("reading the size of the lock table: %w", err)
	}
	idle := fmt.Sprintf("%dms", lockSessionIdle.Milliseconds())
	settings := [][2]string{
		{"idle_session_timeout", idle},
		{"tcp_keepalives_idle", "10"}, {"tcp_keepalives_interval", "5"}, {"tcp_keepalives_count", "3"},
	}
	for _, kv := range settings {
		if _, err := conn.Exec(ctx, "SELECT set_config($1, $2, false)", kv[0], kv[1]); err != nil {
			if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "42704" {
				continue // an older server without the setting
			}
			_ = conn.Close(ctx)
			return nil, 0, fmt.Errorf("setting %s: %w", kv[0], err)
		}
	}
	var id [16]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	live, gate := int64(binary.BigEndian.Uint64(id[:8])), int64(binary.BigEndian.Uint64(id[8:]))
	// The lock first: a claimer that found the row without it would take
	// the session for one that ended.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", live); err != nil {
		_ = conn.Close(ctx)
		return nil, 0, fmt.Errorf("taking the session's liveness lock: %w", err)
	}
	if _, err := conn.Exec(ctx, l.s.q.registerSession, live, gate); err != nil {
		_ = conn.Close(ctx)
		return nil, 0, fmt.Errorf("registering the lock session: %w", err)
	}
	l.mu.Lock()
	l.sessions++
	l.liveLock, l.gateLock = live, gate
	l.mu.Unlock()
	return conn, int(slots), nil
}

// close ends the lock session, which lets every lock go, and removes its
// row from lock_sessions (or leaves it to the next claimer, which removes
// the rows of sessions that ended). The loop has stopped.
func (l *lockSession) close() {
	l.callMu.Lock()
	defer l.callMu.Unlock()
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cancelGrace)
		_, _ = l.conn.Exec(ctx, l.s.q.unregisterSession, l.liveLock)
		cancel()
	}
	l.lose()
}
