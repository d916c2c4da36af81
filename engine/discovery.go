package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
)

// startShards starts a goroutine for each of ids the mapping does not run
// yet. A shard whose source has lineage first waits for its parents.
func (m *mapping) startShards(ctx, work context.Context, wg *sync.WaitGroup, ids []string) {
	for _, id := range ids {
		m.mu.Lock()
		known := slices.ContainsFunc(m.shards, func(s *shard) bool { return s.id == id })
		var s *shard
		if !known {
			s = newShard(m, id)
			m.shards = append(m.shards, s)
		}
		m.mu.Unlock()
		if known {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !s.waitForParents(ctx) {
				return
			}
			s.run(ctx, work)
		}()
	}
}

// discover lists the mapping's shards every discovery interval, and when a
// shard was read to its end, until ctx is done, starting the new ones.
func (m *mapping) discover(ctx, work context.Context, wg *sync.WaitGroup) {
	t := time.NewTicker(m.e.discovery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.rediscover:
		}
		ids, err := m.cfg.Source.Shards(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.e.log.Warn("listing shards failed; the next discovery retries", "mapping", m.cfg.Name, "err", err)
			}
			continue
		}
		m.startShards(ctx, work, wg, ids)
	}
}

// waitForParents blocks until every parent of the shard has been read to
// its end by this mapping, so that records of one partition key stay in
// order across a reshard. It returns false when ctx ends first.
func (s *shard) waitForParents(ctx context.Context) bool {
	lin, ok := s.m.cfg.Source.(source.Lineage)
	if !ok {
		return true
	}
	for attempt := 1; ; attempt++ {
		ended := s.m.shardEndedSignal() // taken first: an end after the check wakes the wait
		done, err := s.parentsFinished(ctx, lin)
		switch {
		case err != nil && ctx.Err() == nil:
			s.lastError.Store(err.Error())
			s.e.log.Warn("checking the parents of a shard failed; retrying", "mapping", s.m.cfg.Name, "shard", s.id, "err", err)
		case done:
			return true
		}
		s.state.Store("waiting for parents")
		t := time.NewTimer(min(s.e.discovery, time.Duration(attempt)*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		case <-ended:
			t.Stop()
		}
	}
}

// parentsFinished reports whether every parent of the shard was read to
// its end. A parent that Shards no longer lists has expired: see
// expiredParent.
func (s *shard) parentsFinished(ctx context.Context, lin source.Lineage) (bool, error) {
	parents, err := lin.Parents(ctx, s.id)
	if err != nil {
		return false, fmt.Errorf("parents of shard %s: %w", s.id, err)
	}
	if len(parents) == 0 {
		return true, nil
	}
	listed, err := s.m.cfg.Source.Shards(ctx)
	if err != nil {
		return false, fmt.Errorf("listing shards: %w", err)
	}
	for _, p := range parents {
		if !slices.Contains(listed, p) {
			fin, err := s.expiredParent(ctx, p)
			if err != nil || !fin {
				return false, err
			}
			continue
		}
		cp, ok, err := s.e.store.Checkpoint(ctx, store.CheckpointKey{Mapping: s.m.cfg.Name, Stream: s.m.cfg.Stream, Shard: p})
		if err != nil {
			return false, fmt.Errorf("checkpoint of parent %s: %w", p, err)
		}
		if !ok {
			return false, nil // the parent has not started
		}
		fin, err := lin.Finished(ctx, p, cp.Sequence)
		if err != nil || !fin {
			return false, err
		}
	}
	return true, nil
}

// expiredEnd is the checkpoint of an expired parent whose unread records
// were reported lost: above every sequence number (Kinesis' have at most
// 129 digits), so every record of the parent is at or below it, and a
// later check finds the loss already counted. No driver reads from it: a
// shard that Shards no longer lists is never started again.
var expiredEnd = idem.Sequence(strings.Repeat("9", 160))

// expiredParentMu serializes the handling of expired parents, so that the
// two children of a split count their parent's loss once.
var expiredParentMu sync.Mutex

// expiredParent decides about a parent that Shards no longer lists: Kinesis
// expired it, retention after it closed. It is finished, and the child may
// start, in every case; what remains is whether records of it were lost:
//
//   - the child has a checkpoint of its own: it started before, once its
//     parents were dealt with; nothing more to count.
//   - the parent has no checkpoint: this mapping never read it (it was
//     created after the parent expired, or never got to it). As with a
//     starting position, records that expired before a mapping first read
//     a shard are not counted as its losses.
//   - the parent runs in this process and found its end (with the driver's
//     help: a reader that finds its shard expired reports the loss itself
//     and moves to the shard's end), or its checkpoint is expiredEnd: done.
//     Without leases, a parent that runs here and has not found its end
//     yet is waited for: its reader reports the loss.
//   - otherwise the parent expired with its reader behind (idem was down
//     longer than the retention, or the reader lagged): its remaining
//     records are gone. Kinesis no longer says how many, so one lost
//     record is committed on the parent's checkpoint, which moves to
//     expiredEnd, and counted and logged as any loss.
//
// What this cannot tell apart once the parent expired: a parent read to its
// end whose child never wrote a checkpoint before a restart (no record for
// a whole retention period), and, with leases, a parent whose reader in
// another process hits the expiry as the child looks. Each counts one
// record lost (or one more): a loss is never missed, at the price of a
// rare extra count.
func (s *shard) expiredParent(ctx context.Context, p string) (bool, error) {
	cfg := s.m.cfg
	if _, ok, err := s.e.store.Checkpoint(ctx, store.CheckpointKey{Mapping: cfg.Name, Stream: cfg.Stream, Shard: s.id}); err != nil {
		return false, fmt.Errorf("checkpoint of shard %s: %w", s.id, err)
	} else if ok {
		return true, nil
	}
	s.m.mu.Lock()
	i := slices.IndexFunc(s.m.shards, func(o *shard) bool { return o.id == p })
	here, finished := i >= 0, i >= 0 && s.m.shards[i].finished.Load()
	s.m.mu.Unlock()
	switch {
	case finished:
		return true, nil
	case here && s.e.lease == nil:
		// This process is the parent's only reader: it finds the
		// expiry itself, reports the loss, and finishes.
		return false, nil
	}
	expiredParentMu.Lock()
	defer expiredParentMu.Unlock()
	key := store.CheckpointKey{Mapping: cfg.Name, Stream: cfg.Stream, Shard: p}
	cp, ok, err := s.e.store.Checkpoint(ctx, key)
	switch {
	case err != nil:
		return false, fmt.Errorf("checkpoint of expired parent %s: %w", p, err)
	case !ok || cp.Sequence == expiredEnd:
		return true, nil
	}
	after := cp.Sequence
	cp.Lost++
	cp.Sequence = expiredEnd
	if err := s.e.store.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: cp}); err != nil {
		return false, fmt.Errorf("committing the loss of expired parent %s: %w", p, err)
	}
	s.e.log.Warn("records expired by retention before they were read: the parent shard expired before it was read to its end", "mapping", cfg.Name, "stream", cfg.Stream, "shard", p, "lost", 1, "after", after, "child", s.id)
	s.e.metrics.lost.WithLabelValues(cfg.Name).Add(1)
	return true, nil
}
