package engine

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

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

// discover lists the mapping's shards every discovery interval until ctx is
// done, starting the new ones.
func (m *mapping) discover(ctx, work context.Context, wg *sync.WaitGroup) {
	t := time.NewTicker(m.e.discovery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
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
		done, err := s.parentsFinished(ctx, lin)
		switch {
		case err != nil && ctx.Err() == nil:
			s.lastError.Store(err.Error())
			s.e.log.Warn("checking the parents of a shard failed; retrying", "mapping", s.m.cfg.Name, "shard", s.id, "err", err)
		case done:
			return true
		}
		s.state.Store("waiting for parents")
		if sleep(ctx, min(s.e.discovery, time.Duration(attempt)*time.Second)) != nil {
			return false
		}
	}
}

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
			continue // expired: nothing left to read
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
